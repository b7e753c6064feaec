"""Model package: manifest, signature, validation, environment, golden sample, reference profile."""
