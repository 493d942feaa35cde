package driver

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
)

// NewLogger returns the logger for berth's own messages, which go to the job
// log (stderr). format is "text" or "json".
func NewLogger(w io.Writer, format string) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(w)
	switch format {
	case "", "text":
		log.SetFormatter(&JobLogFormatter{})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
		log.AddHook(&JobFields{})
	default:
		return nil, fmt.Errorf("unknown --log-format %q: use text or json", format)
	}
	log.AddHook(&Redactor{})
	return log, nil
}

// JobLogFormatter writes short human lines, colored the way GitLab's job log
// shows warnings and errors.
type JobLogFormatter struct{}

// Format implements logrus.Formatter.
func (f *JobLogFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	if name, ok := e.Data[backends.FieldSection].(string); ok {
		// GitLab's collapsible section markers; the \r\x1b[0K hides
		// each marker wherever the log is shown raw, in a terminal too.
		switch e.Data[backends.FieldSectionEdge] {
		case backends.SectionStart:
			fmt.Fprintf(&b, "\x1b[0Ksection_start:%d:%s\r\x1b[0K\x1b[36;1m%s\x1b[0;m\n", e.Time.Unix(), name, e.Message)
		case backends.SectionEnd:
			fmt.Fprintf(&b, "\x1b[0Ksection_end:%d:%s\r\x1b[0K\n", e.Time.Unix(), name)
		}
		return b.Bytes(), nil
	}
	switch e.Level {
	case logrus.WarnLevel:
		b.WriteString("\x1b[0;33mWARNING: ")
	case logrus.ErrorLevel, logrus.FatalLevel, logrus.PanicLevel:
		b.WriteString("\x1b[31;1mERROR: ")
	case logrus.DebugLevel, logrus.TraceLevel:
		b.WriteString("DEBUG: ")
	}
	b.WriteString(e.Message)
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	if e.Level <= logrus.WarnLevel {
		b.WriteString("\x1b[0;m")
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// Redactor is a logrus hook that masks secrets in berth's own messages.
type Redactor struct {
	mu      sync.RWMutex
	secrets []string
}

// Add registers secrets to mask. Values shorter than 4 bytes are too likely
// to mask ordinary text and are skipped, as GitLab does for masked
// variables.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if len(s) >= 4 {
			r.secrets = append(r.secrets, s)
		}
	}
	// Longest first, so a secret containing another is masked whole.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
}

// Redact masks every registered secret in s.
func (r *Redactor) Redact(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, "[MASKED]")
	}
	return s
}

// Levels implements logrus.Hook.
func (r *Redactor) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook.
func (r *Redactor) Fire(e *logrus.Entry) error {
	e.Message = r.Redact(e.Message)
	for k, v := range e.Data {
		switch v := v.(type) {
		case string:
			e.Data[k] = r.Redact(v)
		case error:
			e.Data[k] = r.Redact(v.Error())
		}
	}
	return nil
}

// Fields that [JobFields] puts on every entry of the admin log.
const (
	FieldJobID     = "job_id"
	FieldProject   = "project"
	FieldProjectID = "project_id"
	FieldBackend   = "backend"
	FieldStage     = "stage"
)

// JobFields is a logrus hook that puts the job's identity on every entry
// of the admin log (--log-format json), so that one job's lines can be
// found among many runners'.
type JobFields struct {
	mu     sync.RWMutex
	fields logrus.Fields
}

// Set records a field for every later entry; an empty value is ignored.
func (h *JobFields) Set(key string, value any) {
	if s, ok := value.(string); ok && s == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fields == nil {
		h.fields = logrus.Fields{}
	}
	h.fields[key] = value
}

// Levels implements logrus.Hook.
func (h *JobFields) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook. An entry's own field wins.
func (h *JobFields) Fire(e *logrus.Entry) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for k, v := range h.fields {
		if _, ok := e.Data[k]; !ok {
			e.Data[k] = v
		}
	}
	return nil
}
