// Package packaging holds the deployment files (Debian package, systemd
// units, container images, Kubernetes manifests, Docker Compose,
// monitoring) and the tests that check them offline.
package packaging
