# The meshproxy image: two static binaries, meshproxy for `meshproxy run`
# (the sidecar) and `meshproxy init` (the interception rules), and
# meshcontroller (the control plane), plus the iptables tools that
# `meshproxy init` runs. The control plane is a binary of its own so that the
# Kubernetes client it links stays out of the sidecar in every pod; one image
# keeps one version and one pull for both.
#
# goreleaser builds it (dockers_v2 in goreleaser.yaml) from a context that
# holds only linux/<arch>/meshproxy and linux/<arch>/meshcontroller; nothing
# is compiled here. To build one by hand (CGO_ENABLED=0, as `make build`):
# mkdir -p ctx/linux/amd64 && cp bin/meshproxy bin/meshcontroller ctx/linux/amd64/ &&
# docker buildx build --platform linux/amd64 -f Dockerfile ctx
FROM alpine:3.22

# internal/proxyinit runs {ip,ip6}tables-{nft,legacy}-{save,restore} and falls
# back to plain {ip,ip6}tables. Since Alpine 3.19 the `iptables` package
# carries only the nf_tables tools (IPv6 included) and the legacy ones are
# `iptables-legacy`; the loop fails the build if a name the proxy looks up is
# missing.
#
# The init container runs with a read-only root filesystem, and the legacy
# tools open /run/xtables.lock with O_CREAT: that fails on a read-only mount
# unless the file already exists, so the image ships it empty.
RUN apk add --no-cache iptables iptables-legacy \
 && for t in iptables ip6tables \
             iptables-nft-save iptables-nft-restore ip6tables-nft-save ip6tables-nft-restore \
             iptables-legacy-save iptables-legacy-restore ip6tables-legacy-save ip6tables-legacy-restore; do \
      command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; \
    done \
 && mkdir -p /run && touch /run/xtables.lock

ARG TARGETPLATFORM
COPY ${TARGETPLATFORM}/meshproxy /usr/local/bin/meshproxy
COPY ${TARGETPLATFORM}/meshcontroller /usr/local/bin/meshcontroller

LABEL org.opencontainers.image.title="meshproxy" \
      org.opencontainers.image.description="The meshctl service mesh's in-cluster binaries: sidecar proxy and init step (meshproxy), control plane (meshcontroller)" \
      org.opencontainers.image.source="https://github.com/meshctl/mesh"

# The entrypoint is the sidecar, the image's most common use; the chart's
# controller Deployment sets its command to /usr/local/bin/meshcontroller.
#
# Every role sets its own user in its securityContext: the init container
# runs as root with NET_ADMIN and NET_RAW, the proxy as the MeshConfig's proxy
# uid (2710 by default), the controller as 65532. The default is the generic
# non-root 65532 rather than the proxy uid on purpose: the interception rules
# let the proxy uid's traffic bypass redirection, and nothing else started
# from this image (a debug container, a forgotten runAsUser) should inherit
# that.
USER 65532:65532

ENTRYPOINT ["/usr/local/bin/meshproxy"]
