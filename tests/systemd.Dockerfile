# systemd 252 as PID 1 with lyoncam installed as docs/systemd.md says, on a minimal Debian: no
# procps, so no /bin/kill (ExecReload must not need it):
# image at /opt/lyoncam, systemd/lyoncam.service in /etc/systemd/system (tests/test_systemd.py).
ARG LYONCAM_IMAGE=lyoncam:test
FROM ${LYONCAM_IMAGE} AS app

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends systemd systemd-sysv python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && systemctl mask systemd-logind.service getty.target console-getty.service
COPY --from=app /opt/lyoncam /opt/lyoncam
COPY lyoncam.service /etc/systemd/system/lyoncam.service
CMD ["/sbin/init"]
