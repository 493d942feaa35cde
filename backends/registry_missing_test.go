package backends

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/config"
)

var (
	errMissing          = errors.New("built without missing-omega: build with -tags omega")
	registerMissingOnce sync.Once
)

func TestRegisterMissing(t *testing.T) {
	registerMissingOnce.Do(func() { RegisterMissing("missing-omega", errMissing) })

	if _, err := Open("missing-omega", config.Default(), logrus.New()); !errors.Is(err, errMissing) {
		t.Errorf("Open(missing-omega): got %v, want the registered reason", err)
	}
	if names := Names(); !slices.Contains(names, "missing-omega") {
		t.Errorf("Names: got %v, want it to list missing-omega", names)
	}
	if avail := Available(); slices.Contains(avail, "missing-omega") {
		t.Errorf("Available: got %v, want it without missing-omega", avail)
	}
}

func TestRegisterMissingPanics(t *testing.T) {
	registerMissingOnce.Do(func() { RegisterMissing("missing-omega", errMissing) })
	tests := map[string]func(){
		"missing twice": func() { RegisterMissing("missing-omega", errMissing) },
		"factory for missing": func() {
			Register("missing-omega", func(*config.Config, logrus.FieldLogger) (Backend, error) { return nopBackend{}, nil })
		},
		"missing without why": func() { RegisterMissing("missing-nil", nil) },
	}
	for name, register := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("got no panic, want one")
				}
			}()
			register()
		})
	}
	if slices.Contains(Names(), "missing-nil") {
		t.Errorf("Names: got %v, want no missing-nil after the refused registration", Names())
	}
}
