# berth-test/helper:latest: the Debian test image plus the gitlab-runner
# stand-in, used as berth's helper image in integration tests.
# Built by integration/provision.sh with the classic builder (DOCKER_BUILDKIT=0)
# from the locally built base image only; nothing is pulled.
FROM berth-test/debian:12
COPY gitlab-runner-standin /usr/bin/gitlab-runner
RUN chmod 0755 /usr/bin/gitlab-runner
