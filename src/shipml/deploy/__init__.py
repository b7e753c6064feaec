"""Deploy targets generated from the deployment spec: container build context, Kubernetes manifests, Ray Serve
application, locustfile."""
