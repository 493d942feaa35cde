package dind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/backends/dockerengine"
	"github.com/berthci/berth/config"
)

func sidecarName(job *backends.Job) string { return job.Name() + "-dind" }
func dnsName(job *backends.Job) string     { return job.Name() + "-dind-dns" }
func cacheVolumeName(runner string, projectID int64) string {
	return fmt.Sprintf("berth-%s-dindcache-%d", runner, projectID)
}
func cacheLockName(runner string, projectID int64) string {
	return cacheVolumeName(runner, projectID) + "-lock"
}

// startSidecar starts the job's DNS forwarder and DinD sidecar, and waits for
// the inner daemon's authenticated ping.
func (b *Backend) startSidecar(ctx context.Context, job *backends.Job, p *plan) error {
	api := b.cli
	dcfg := b.cfg.Dind
	start := time.Now()
	defer backends.StartSection(b.log, "prepare_dind", fmt.Sprintf("Starting the DinD sidecar (%s)", dcfg.Image)).End()
	engine, err := dockerengine.New(b.cli, b.cfg.Docker, dockerengine.Options{}, b.log)
	if err != nil {
		return err
	}
	sidecarImage, err := engine.EnsureImage(ctx, job, dcfg.Image, dcfg.PullPolicy)
	if err != nil {
		return err
	}
	if p.tls {
		if err := os.RemoveAll(p.certDir); err != nil {
			return fmt.Errorf("remove old DinD certificates: %w", err)
		}
		if err := writeCerts(p.certDir, p.aliases); err != nil {
			return fmt.Errorf("make the job's DinD TLS certificates in %s: %w", p.certDir, err)
		}
	}
	netName := dockerengine.NetworkName(job)

	dnsIP, err := b.startDNSForwarder(ctx, job, netName, sidecarImage.ID)
	if err != nil {
		return err
	}
	dataVolume, err := b.dataVolume(ctx, job, p)
	if err != nil {
		return err
	}
	mtu, err := b.effectiveMTU(ctx)
	if err != nil {
		return err
	}

	cmd := []string{"dockerd", "--host=unix:///var/run/docker.sock", fmt.Sprintf("--mtu=%d", mtu), "--dns=" + dnsIP}
	if p.tls {
		cmd = append(cmd, fmt.Sprintf("--host=tcp://0.0.0.0:%d", tlsPort), "--tlsverify",
			"--tlscacert="+sidecarCerts+"/ca.pem", "--tlscert="+sidecarCerts+"/cert.pem", "--tlskey="+sidecarCerts+"/key.pem")
	} else {
		cmd = append(cmd, fmt.Sprintf("--host=tcp://0.0.0.0:%d", plainPort), "--tls=false")
	}
	for _, m := range dcfg.RegistryMirrors {
		cmd = append(cmd, "--registry-mirror="+m)
	}
	for _, r := range dcfg.InsecureRegistries {
		cmd = append(cmd, "--insecure-registry="+r)
	}
	// By the id just resolved, never a name a job could move since, and
	// without the image's HEALTHCHECK.
	ccfg := &container.Config{
		Image:       sidecarImage.ID,
		Healthcheck: dockerengine.NoHealthcheck,
		Cmd:         cmd,
		Labels:      job.Labels(roleSidecar),
		Env:         []string{"DOCKER_TLS_CERTDIR="},
	}
	if p.override != nil {
		ccfg.Entrypoint, ccfg.Cmd = p.override.Entrypoint, p.override.Command
		ccfg.Env = p.override.Env
		b.log.Warn("The job overrides the DinD sidecar's entrypoint or command (allowed by dind.allow_service_overrides)")
	}
	binds := []string{job.BuildsDir + ":" + job.BuildsDir, dataVolume + ":" + innerDataPath}
	if p.tls {
		binds = append(binds, filepath.Join(p.certDir, "server")+":"+sidecarCerts+":ro")
	}
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(netName),
		Binds:       binds,
		DNS:         b.cfg.Docker.DNS,
		DNSSearch:   b.cfg.Docker.DNSSearch,
		ExtraHosts:  b.cfg.Docker.ExtraHosts,
	}
	if err := sidecarPrivileges(hc, dcfg, p.privileged); err != nil {
		return err
	}
	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {Aliases: p.aliases}}}
	created, err := api.ContainerCreate(ctx, ccfg, hc, nc, nil, sidecarName(job))
	if err != nil {
		return fmt.Errorf("create the DinD sidecar from %q: %w; check the [dind] settings in the berth config", dcfg.Image, err)
	}
	if err := api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start the DinD sidecar: %w; if privileged containers fail on this host, use the [dind] capability settings", err)
	}
	if err := b.waitReady(ctx, engine, created.ID, netName, p); err != nil {
		return err
	}
	b.log.Infof("DinD daemon ready at tcp://%s:%d in %.1fs (TLS %v, MTU %d)", sidecarAlias, port(p), time.Since(start).Seconds(), p.tls, mtu)
	return nil
}

func port(p *plan) int {
	if p.tls {
		return tlsPort
	}
	return plainPort
}

// startDNSForwarder runs berth's own binary as a DNS relay to Docker's
// embedded resolver on the job network, and returns its address.
func (b *Backend) startDNSForwarder(ctx context.Context, job *backends.Job, netName, imageID string) (string, error) {
	self, err := backends.SelfBinary(b.RelayBinary, b.cfg.Docker.BerthBinary, "the DinD DNS relay")
	if err != nil {
		return "", err
	}
	readOnly := true
	created, err := b.cli.ContainerCreate(ctx, &container.Config{
		Image:       imageID,
		Healthcheck: dockerengine.NoHealthcheck,
		Entrypoint:  []string{"/berth"},
		Cmd:         []string{"dns-forward", "--listen", ":53", "--upstream", "127.0.0.11:53"},
		Labels:      job.Labels(roleDNS),
	}, &container.HostConfig{
		NetworkMode:    container.NetworkMode(netName),
		Binds:          []string{self + ":/berth:ro"},
		CapDrop:        []string{"ALL"},
		CapAdd:         []string{"NET_BIND_SERVICE"},
		ReadonlyRootfs: readOnly,
		SecurityOpt:    []string{"no-new-privileges"},
	}, nil, nil, dnsName(job))
	if err != nil {
		return "", fmt.Errorf("create the DinD DNS relay: %w", err)
	}
	if err := b.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return "", fmt.Errorf("start the DinD DNS relay: %w", err)
	}
	inspect, err := b.cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		return "", fmt.Errorf("inspect the DinD DNS relay: %w", err)
	}
	ep, ok := inspect.NetworkSettings.Networks[netName]
	if !ok || ep.IPAddress == "" {
		return "", fmt.Errorf("the DinD DNS relay has no address on the job network")
	}
	return ep.IPAddress, nil
}

// dataVolume returns the volume for the inner daemon's /var/lib/docker: the
// project's layer cache when the job may have it and no other job holds it,
// else a throwaway volume of the job's.
func (b *Backend) dataVolume(ctx context.Context, job *backends.Job, p *plan) (string, error) {
	if p.cache {
		// The lock is a container name: the engine lets only one exist. It
		// carries the job's labels, so the job's cleanup releases it, even
		// after a SIGKILL.
		_, err := b.cli.ContainerCreate(ctx, &container.Config{Image: b.cfg.Dind.Image, Labels: job.Labels(roleCacheLock)},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, cacheLockName(job.Runner, job.ProjectID))
		switch {
		case err == nil:
			name := cacheVolumeName(job.Runner, job.ProjectID)
			labels := map[string]string{
				backends.LabelRunner: job.Runner, backends.LabelProjectID: strconv.FormatInt(job.ProjectID, 10),
				backends.LabelProject: job.ProjectPath, backends.LabelRole: roleCache, backends.LabelBackend: Name,
			}
			if err := dockerengine.CreateVolume(ctx, b.cli, name, labels, backends.LabelRunner, backends.LabelProjectID, backends.LabelRole); err != nil {
				return "", fmt.Errorf("the DinD layer cache: %w", err)
			}
			b.log.Infof("Using the project's DinD layer cache (volume %s)", name)
			return name, nil
		case cerrdefs.IsConflict(err):
			b.log.Warnf("The project's DinD layer cache is in use by another job; this job uses a fresh volume")
		default:
			return "", fmt.Errorf("lock the DinD layer cache: %w", err)
		}
	}
	name := job.Name() + "-dind-data"
	labels := job.Labels("dind-data")
	if err := dockerengine.CreateVolume(ctx, b.cli, name, labels, backends.LabelRunner, backends.LabelJobID, backends.LabelRole, backends.LabelCreated); err != nil {
		return "", fmt.Errorf("the DinD data volume: %w", err)
	}
	return name, nil
}

// effectiveMTU is the MTU the inner daemon must use so its packets fit the
// job network: the admin's dind.mtu, else docker.network_mtu, else the host
// bridge's.
func (b *Backend) effectiveMTU(ctx context.Context) (int, error) {
	if b.cfg.Dind.MTU > 0 {
		return b.cfg.Dind.MTU, nil
	}
	if b.cfg.Docker.NetworkMTU > 0 {
		return b.cfg.Docker.NetworkMTU, nil
	}
	bridge, err := b.cli.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return 0, fmt.Errorf("inspect the host's bridge network for its MTU: %w", err)
	}
	if v, ok := bridge.Options["com.docker.network.driver.mtu"]; ok {
		if mtu, err := strconv.Atoi(v); err == nil && mtu > 0 {
			return mtu, nil
		}
	}
	return 1500, nil
}

// waitReady polls the inner daemon's /_ping over the job network until it
// answers, the sidecar exits or dind.ready_timeout passes.
func (b *Backend) waitReady(ctx context.Context, engine *dockerengine.Engine, id, netName string, p *plan) error {
	timeout := b.cfg.Dind.ReadyTimeout.Duration
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	transport := &http.Transport{DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	scheme := "http"
	if p.tls {
		tlsCfg, err := clientTLS(p.certDir)
		if err != nil {
			return err
		}
		transport.TLSClientConfig = tlsCfg
		scheme = "https"
	}
	httpClient := &http.Client{Transport: transport, Timeout: 2 * time.Second}
	defer transport.CloseIdleConnections()
	var lastErr error
	for tick := 0; ; tick++ {
		inspect, err := b.cli.ContainerInspect(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("inspect the DinD sidecar: %w", err)
		}
		if inspect.State != nil && !inspect.State.Running {
			return fmt.Errorf("the DinD sidecar exited with code %d before its daemon was ready; its last log lines:\n%s",
				inspect.State.ExitCode, engine.LogTail(id))
		}
		if ep, ok := inspect.NetworkSettings.Networks[netName]; ok && ep.IPAddress != "" {
			url := fmt.Sprintf("%s://%s/_ping", scheme, net.JoinHostPort(ep.IPAddress, strconv.Itoa(port(p))))
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := httpClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("/_ping answered %s", resp.Status)
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("wait for the DinD daemon: %w", ctx.Err())
	}
	return fmt.Errorf("the DinD daemon did not answer an authenticated ping within %s (last error: %v); raise dind.ready_timeout or check the [dind] settings; the sidecar's last log lines:\n%s",
		timeout, lastErr, engine.LogTail(id))
}

// pruneCache shrinks the project's layer cache after a job that held it,
// when the admin set dind.layer_cache_max_size.
func (b *Backend) pruneCache(ctx context.Context, job *backends.Job) error {
	max := b.cfg.Dind.LayerCacheMaxBytes()
	if max <= 0 || b.cfg.Dind.LayerCache != config.LayerCacheProject {
		return nil
	}
	lock, err := b.cli.ContainerInspect(ctx, cacheLockName(job.Runner, job.ProjectID))
	if cerrdefs.IsNotFound(err) || err == nil && lock.Config.Labels[backends.LabelJobID] != strconv.FormatInt(job.ID, 10) {
		return nil
	}
	if err != nil {
		return err
	}
	sidecar, err := b.cli.ContainerInspect(ctx, sidecarName(job))
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ep, ok := sidecar.NetworkSettings.Networks[dockerengine.NetworkName(job)]
	if !ok || ep.IPAddress == "" || !sidecar.State.Running {
		return nil
	}
	opts := []client.Opt{client.WithAPIVersionNegotiation()}
	if _, err := os.Stat(certDir(job)); err == nil {
		tlsCfg, err := clientTLS(certDir(job))
		if err != nil {
			return err
		}
		opts = append(opts, client.WithHost("tcp://"+net.JoinHostPort(ep.IPAddress, strconv.Itoa(tlsPort))),
			client.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}), client.WithScheme("https"))
	} else {
		opts = append(opts, client.WithHost("tcp://"+net.JoinHostPort(ep.IPAddress, strconv.Itoa(plainPort))))
	}
	inner, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return err
	}
	defer inner.Close()
	report, err := inner.BuildCachePrune(ctx, build.CachePruneOptions{KeepStorage: max})
	if err != nil {
		return fmt.Errorf("prune the inner build cache: %w", err)
	}
	// The classic builder's cache is the untagged images of earlier
	// builds, so they go only when the layers outgrow the limit.
	du, err := inner.DiskUsage(ctx, types.DiskUsageOptions{Types: []types.DiskUsageObject{types.ImageObject}})
	if err != nil {
		return fmt.Errorf("measure the inner image layers: %w", err)
	}
	if du.LayersSize <= max {
		if report.SpaceReclaimed > 0 {
			b.log.Infof("Pruned the DinD layer cache: %d bytes of build cache; image layers (%d bytes) are within dind.layer_cache_max_size", report.SpaceReclaimed, du.LayersSize)
		}
		return nil
	}
	images, err := inner.ImagesPrune(ctx, filters.NewArgs(filters.Arg("dangling", "true")))
	if err != nil {
		return fmt.Errorf("prune dangling inner images: %w", err)
	}
	b.log.Infof("Pruned the DinD layer cache: %d bytes of build cache, %d bytes of dangling images (layers were %d bytes, over dind.layer_cache_max_size)", report.SpaceReclaimed, images.SpaceReclaimed, du.LayersSize)
	return nil
}

// parseDevices reads "host[:container[:permissions]]" device mappings.
func parseDevices(specs []string) ([]container.DeviceMapping, error) {
	var devices []container.DeviceMapping
	for _, s := range specs {
		parts := strings.Split(s, ":")
		d := container.DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		if len(parts) > 1 && parts[1] != "" {
			d.PathInContainer = parts[1]
		}
		if len(parts) > 2 {
			d.CgroupPermissions = parts[2]
		}
		if len(parts) > 3 || !filepath.IsAbs(d.PathOnHost) || !filepath.IsAbs(d.PathInContainer) {
			return nil, fmt.Errorf("dind.devices: %q must be \"/dev/host[:/dev/container[:rwm]]\"", s)
		}
		devices = append(devices, d)
	}
	return devices, nil
}
