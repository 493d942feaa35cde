package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// newTestLogger returns a text logger writing to a buffer, and its Redactor.
func newTestLogger(t *testing.T, format string) (*logrus.Logger, *Redactor, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log, err := NewLogger(&buf, format)
	if err != nil {
		t.Fatalf("NewLogger: got %v, want no error", err)
	}
	log.SetLevel(logrus.DebugLevel)
	var redactor *Redactor
	for _, h := range log.Hooks[logrus.InfoLevel] {
		if r, ok := h.(*Redactor); ok {
			redactor = r
		}
	}
	if redactor == nil {
		t.Fatal("got no Redactor hook, want NewLogger to install one")
	}
	return log, redactor, &buf
}

func TestRedactorMasksSecrets(t *testing.T) {
	job := &Job{
		Token:       "glcbt-token-value",
		Variables:   []Variable{{Key: "DB_PASSWORD", Value: "hunter2-masked", Masked: true}},
		Credentials: []CredentialDTO{{Type: "registry", URL: "r", Username: "u", Password: "registry-password"}},
	}
	log, redactor, buf := newTestLogger(t, "text")
	redactor.Add(job.Secrets()...)
	redactor.Add("abc") // too short to mask

	log.WithField("token", "glcbt-token-value").
		WithError(errors.New("login with registry-password failed")).
		Infof("pulling with %s and %s; abc stays", "glcbt-token-value", "hunter2-masked")
	out := buf.String()
	for _, secret := range []string{"glcbt-token-value", "hunter2-masked", "registry-password"} {
		if strings.Contains(out, secret) {
			t.Errorf("got %q, want %q masked", out, secret)
		}
	}
	if got := strings.Count(out, "[MASKED]"); got != 4 {
		t.Errorf("got %d masks in %q, want 4", got, out)
	}
	if !strings.Contains(out, "abc stays") {
		t.Errorf("got %q, want the 3-byte value left alone", out)
	}
}

func TestRedactorMasksLongestFirst(t *testing.T) {
	var r Redactor
	r.Add("pass", "password123")
	if got, want := r.Redact("x password123 pass"), "x [MASKED] [MASKED]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedactorJSONFormat(t *testing.T) {
	log, redactor, buf := newTestLogger(t, "json")
	redactor.Add("s3cr3t-value")
	log.WithField("detail", "has s3cr3t-value").Warn("token s3cr3t-value")
	var entry map[string]any
	if err := json.Unmarshal(buf.Bytes(), &entry); err != nil {
		t.Fatalf("got %q, want one JSON object: %v", buf, err)
	}
	if entry["msg"] != "token [MASKED]" || entry["detail"] != "has [MASKED]" {
		t.Errorf("got %v, want msg and detail masked", entry)
	}
}

func TestNewLoggerRefusesUnknownFormat(t *testing.T) {
	_, err := NewLogger(&bytes.Buffer{}, "xml")
	if err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("got %v, want an error naming the format", err)
	}
}

func TestJobLogFormatter(t *testing.T) {
	tests := map[string]struct {
		level logrus.Level
		data  logrus.Fields
		want  string
	}{
		"info":        {level: logrus.InfoLevel, want: "hello\n"},
		"info fields": {level: logrus.InfoLevel, data: logrus.Fields{"b": 2, "a": "x"}, want: "hello a=x b=2\n"},
		"warning":     {level: logrus.WarnLevel, want: "\x1b[0;33mWARNING: hello\x1b[0;m\n"},
		"error":       {level: logrus.ErrorLevel, want: "\x1b[31;1mERROR: hello\x1b[0;m\n"},
		"debug":       {level: logrus.DebugLevel, want: "DEBUG: hello\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			entry := &logrus.Entry{Level: tc.level, Message: "hello", Data: tc.data}
			got, err := (&JobLogFormatter{}).Format(entry)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
