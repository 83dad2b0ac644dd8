"""The embedded lab cluster: Kubernetes API, kube-proxy emulation and helloworld pods."""
