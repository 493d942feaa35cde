package backends

import (
	"fmt"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/config"
)

// Factory makes a backend from the admin config. It must be cheap: it runs
// in every stage process, so it may not contact the engine.
type Factory func(cfg *config.Config, log logrus.FieldLogger) (Backend, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
	// missing holds the backends this build leaves out, with the reason.
	missing = map[string]error{}
)

// Register makes a backend available by name. It panics on a duplicate
// name, as database/sql does, since that is a programming error.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[name]; dup {
		panic("backends: Register called twice for " + name)
	}
	if _, dup := missing[name]; dup {
		panic("backends: Register called for " + name + ", which RegisterMissing left out")
	}
	factories[name] = f
}

// RegisterMissing records a backend that this build leaves out (a build
// tag excludes it), with why and how to get it. Open returns why for it, so
// a config that names it gets the reason; Names lists it, Available does
// not. It panics on a duplicate name, like Register.
func RegisterMissing(name string, why error) {
	mu.Lock()
	defer mu.Unlock()
	_, dupFactory := factories[name]
	_, dupMissing := missing[name]
	if dupFactory || dupMissing {
		panic("backends: RegisterMissing called for " + name + ", which is already registered")
	}
	if why == nil {
		panic("backends: RegisterMissing called for " + name + " without a reason")
	}
	missing[name] = why
}

// Open makes the named backend.
func Open(name string, cfg *config.Config, log logrus.FieldLogger) (Backend, error) {
	mu.RLock()
	f, ok := factories[name]
	why := missing[name]
	mu.RUnlock()
	if why != nil {
		return nil, why
	}
	if !ok {
		return nil, fmt.Errorf("backend %q is not built into this berth (available: %v)", name, Available())
	}
	return f(cfg, log)
}

// Names lists the registered backends, built in or missing, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(factories)+len(missing))
	for n := range factories {
		names = append(names, n)
	}
	for n := range missing {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Available lists the backends built into this berth, sorted.
func Available() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
