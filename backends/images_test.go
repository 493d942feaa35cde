package backends

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
)

func TestJobImagesOnceEachHelperIfNotPresent(t *testing.T) {
	job := &Job{Image: Image{Name: "app", PullPolicies: []string{"always"}},
		Services: []Service{{Image: Image{Name: "db"}}, {Image: Image{Name: "app"}}, {Image: Image{Name: "helper"}}}}
	got := JobImages(job, "helper")
	var names []string
	for _, img := range got {
		names = append(names, img.Name)
	}
	if strings.Join(names, ",") != "app,helper,db" {
		t.Fatalf("got %v, want app,helper,db", names)
	}
	if got[0].PullPolicies[0] != "always" || got[1].PullPolicies[0] != "if-not-present" {
		t.Errorf("pull policies: job %v, helper %v", got[0].PullPolicies, got[1].PullPolicies)
	}
	if n := len(JobImages(job, "")); n != 3 {
		t.Errorf("without a helper image: got %d images, want 3 (app, db and the service named helper)", n)
	}
}

func TestEnsureImagesReturnsByNameAndStopsOnError(t *testing.T) {
	imgs := []Image{{Name: "a"}, {Name: "b"}}
	got, err := EnsureImages(context.Background(), imgs, func(_ context.Context, img Image) (string, error) { return "id-" + img.Name, nil })
	if err != nil || got["a"] != "id-a" || got["b"] != "id-b" {
		t.Fatalf("got %v, %v", got, err)
	}
	var canceled atomic.Bool
	_, err = EnsureImages(context.Background(), imgs, func(ctx context.Context, img Image) (string, error) {
		if img.Name == "a" {
			return "", errors.New("pull a: denied")
		}
		<-ctx.Done()
		canceled.Store(true)
		return "", ctx.Err()
	})
	if err == nil || !strings.Contains(err.Error(), "pull a: denied") || !canceled.Load() {
		t.Errorf("got %v (others canceled: %v), want the first error and the others canceled", err, canceled.Load())
	}
}

func TestServiceLogsPrefixesWholeLines(t *testing.T) {
	var out bytes.Buffer
	logs := NewServiceLogs(&out)
	ctx, cancel := context.WithCancel(context.Background())
	for _, alias := range []string{"db", "web"} {
		logs.Follow(alias, func(w io.Writer) error {
			_, _ = io.WriteString(w, alias+" one\n"+alias+" tw")
			_, _ = io.WriteString(w, "o\n")
			<-ctx.Done()
			return nil
		})
	}
	logs.Stop(cancel)
	for _, want := range []string{"[service:db] db one\n", "[service:db] db two\n", "[service:web] web one\n", "[service:web] web two\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
