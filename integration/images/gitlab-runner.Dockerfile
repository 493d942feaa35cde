# berth-test/gitlab-runner:latest: a local stand-in for the official
# gitlab/gitlab-runner image, which berth's Dockerfile takes as RUNNER_IMAGE
# in the integration tests (TestDockerfile). Like the official image it has
# gitlab-runner at /usr/bin/gitlab-runner and runs it by default (the
# official one through /usr/bin/dumb-init /entrypoint, which this lacks).
# Built by integration/provision.sh with the classic builder (DOCKER_BUILDKIT=0)
# from the locally built base image only; nothing is pulled.
FROM berth-test/debian:12
COPY gitlab-runner-standin /usr/bin/gitlab-runner
RUN chmod 0755 /usr/bin/gitlab-runner
ENTRYPOINT ["/usr/bin/gitlab-runner"]
CMD ["run", "--user=gitlab-runner", "--working-directory=/home/gitlab-runner"]
