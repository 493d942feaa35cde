package integration

import (
	"strings"
	"testing"
)

// gatewayFunc sets $gw to the job container's default gateway, as
// testcontainers finds the host from inside a container.
const gatewayFunc = `gateway() { local h; h=$(awk '$2=="00000000"{print $3; exit}' /proc/net/route); gw=$(printf '%d.%d.%d.%d' 0x${h:6:2} 0x${h:4:2} 0x${h:2:2} 0x${h:0:2}); }`

// TestGuardPublishedPorts is the testcontainers flow: the job starts a
// server with a published port and reaches it from the job container at
// its gateway. On socket the guard binds published ports there, on the job
// network's gateway, never on every host interface; another address is
// refused. Rootless Podman cannot bind the gateway, so there the guard
// refuses published ports but loopback ones.
func TestGuardPublishedPorts(t *testing.T) {
	forGuardedBackends(t, options{}, func(t *testing.T, backend string, e *env) {
		job := e.job(341)
		job.Script = []string{
			resultFunc, gatewayFunc, "gateway; echo \"GATEWAY $gw\"",
			`step=publish res docker run -d --name "web-$CI_JOB_ID" -p 8080 ` + httpImage,
			`step=publish-all res docker run -d --name "web2-$CI_JOB_ID" -P --expose 8080 ` + httpImage,
			`step=publish-every-interface res docker run -d --name "web3-$CI_JOB_ID" -p 0.0.0.0::8080 ` + httpImage,
			`step=publish-elsewhere res docker run -d -p 192.0.2.1::8080 ` + httpImage,
			`step=publish-loopback res docker run -d --name "web4-$CI_JOB_ID" -p 127.0.0.1::8080 ` + httpImage,
			`for c in web web2 web3 web4; do { docker port "$c-$CI_JOB_ID" 2>/dev/null || true; } | sed "s/^/PORT $c /"; done`,
			// reach each published port at the gateway, as testcontainers does
			`for c in web web2 web3; do hp=$(docker port "$c-$CI_JOB_ID" 8080/tcp 2>/dev/null | head -1 || true); [ -n "$hp" ] || continue; for i in $(seq 30); do if r=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' "$gw" "${hp##*:}" 2>/dev/null) && [[ $r == *"hello from berth service"* ]]; then echo "REACHED $c"; break; fi; sleep 0.3; done; done`,
		}
		res := e.run(job)
		requireSuccess(t, res)
		out, _ := res.Stage("build_script")
		var gateway string
		for _, line := range strings.Split(out.Output, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "GATEWAY "); ok {
				gateway = rest
			}
		}
		want := []string{"RESULT publish-loopback allowed", "PORT web4 8080/tcp -> 127.0.0.1:"}
		if backend == "socket" {
			want = append(want, "RESULT publish allowed", "RESULT publish-all allowed", "RESULT publish-every-interface allowed",
				"RESULT publish-elsewhere refused", "publishing port 8080/tcp on 192.0.2.1 is not allowed",
				"PORT web 8080/tcp -> "+gateway+":", "PORT web2 8080/tcp -> "+gateway+":", "PORT web3 8080/tcp -> "+gateway+":",
				"REACHED web\n", "REACHED web2", "REACHED web3")
		} else {
			want = append(want, "RESULT publish refused", "RESULT publish-all refused", "RESULT publish-every-interface refused",
				"RESULT publish-elsewhere refused", "is not available on this rootless Podman", "docker.guard_public_ports")
		}
		for _, w := range want {
			if !strings.Contains(out.Output, w) {
				t.Errorf("build_script lacks %q:\n%s", w, out.Output)
			}
		}
		for _, line := range strings.Split(out.Output, "\n") {
			if strings.HasPrefix(line, "PORT ") && (strings.Contains(line, "0.0.0.0:") || strings.Contains(line, ":::")) {
				t.Errorf("a published port is on every host interface: %s", line)
			}
		}
		e.assertNoResources()
	})
}
