# berth-test/registry:latest: Debian's docker-registry (distribution 2.8) as a
# job service, for pushes from inside DinD jobs (the host's registry listens on
# the host's loopback only). No auth, storage in the container. Built by
# provision.sh from a context holding the host's /usr/bin/docker-registry.
FROM berth-test/debian:12
COPY docker-registry /usr/local/bin/docker-registry
COPY registry-service.yml /etc/docker-registry.yml
EXPOSE 5000
ENTRYPOINT ["docker-registry", "serve", "/etc/docker-registry.yml"]
