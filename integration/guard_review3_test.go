package integration

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

var stepArrow = regexp.MustCompile(`(?m)^ ---> ([0-9a-f]{12})$`)

// TestGuardThirdAttackReview replays what the third outside review got
// through on the socket: a multi-stage build's builder stage and a failed
// build's step images, which carry no labels, outliving the job and
// readable by another project meanwhile; and a name of hex digits that the
// engine reads as another project's image id once the job drops its tag.
func TestGuardThirdAttackReview(t *testing.T) {
	e := newEnv(t, options{})
	genuine := engineImageID(t, "socket", busyboxImage)
	a := e.job(371)
	a.Script = []string{
		`mkdir -p ms failed`,
		`printf 'FROM ` + busyboxImage + ` AS builder\nCOPY Dockerfile /token\nFROM ` + busyboxImage + `\nCOPY --from=builder /token /x\n' > ms/Dockerfile`,
		`DOCKER_BUILDKIT=0 docker build ms`,
		`printf 'FROM ` + busyboxImage + `\nCOPY Dockerfile /f\nRUN false\n' > failed/Dockerfile`,
		`DOCKER_BUILDKIT=0 docker build failed || echo FAILED-AS-MEANT`,
		`if docker tag ` + busyboxImage + ` 6e6af0488def; then echo "RESULT hex allowed"; else echo "RESULT hex refused"; fi`,
	}
	sa := preparedSession(t, e, a)
	outA := mustRunStage(t, sa, "build_script")
	var steps []string
	for _, m := range stepArrow.FindAllStringSubmatch(outA, -1) {
		if !strings.HasPrefix(genuine, m[1]) {
			steps = append(steps, m[1])
		}
	}
	if len(steps) < 4 || !strings.Contains(outA, "FAILED-AS-MEANT") {
		t.Fatalf("job A's builds made %d step images, want at least 4, so this proves nothing:\n%s", len(steps), outA)
	}
	for _, want := range []string{"RESULT hex refused", "a name of hex digits only reads as an image id"} {
		if !strings.Contains(outA, want) {
			t.Errorf("job A's build_script lacks %q:\n%s", want, outA)
		}
	}

	// Another project's job, while A runs, cannot use them.
	b := e.job(372)
	for _, id := range steps {
		b.Script = append(b.Script, fmt.Sprintf(`if docker run --rm %s true; then echo "RESULT %s allowed"; else echo "RESULT %s refused"; fi`, id, id, id))
	}
	res := e.run(b)
	requireSuccess(t, res)
	outB, _ := res.Stage("build_script")
	for _, id := range steps {
		if !strings.Contains(outB.Output, "RESULT "+id+" refused") {
			t.Errorf("job B could run job A's step image %s:\n%s", id, outB.Output)
		}
	}

	// A's cleanup removes them all.
	if r := sa.Cleanup(context.Background()); r.ExitCode != 0 {
		t.Fatalf("job A's cleanup: %d\n%s", r.ExitCode, r.Output)
	}
	for _, id := range steps {
		if _, err := dockerCli.ImageInspect(context.Background(), id); err == nil {
			t.Errorf("job A's step image %s outlived its cleanup", id)
		}
	}
	e.assertNoResources()
}
