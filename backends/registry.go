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
)

// Register makes a backend available by name. It panics on a duplicate
// name, as database/sql does, since that is a programming error.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[name]; dup {
		panic("backends: Register called twice for " + name)
	}
	factories[name] = f
}

// Open makes the named backend.
func Open(name string, cfg *config.Config, log logrus.FieldLogger) (Backend, error) {
	mu.RLock()
	f, ok := factories[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("backend %q is not built into this berth (available: %v)", name, Names())
	}
	return f(cfg, log)
}

// Names lists the registered backends, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
