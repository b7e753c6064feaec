"""Watching served models: the prediction log, drift against the training profile, ground-truth feedback and
live performance, alerts, and reports. Off the request path: the dataplane hands each batch to a sink."""
