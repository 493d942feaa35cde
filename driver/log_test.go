package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/berthci/berth/backends"
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

func TestSectionsAreGitLabMarkersInTextAndFieldsInJSON(t *testing.T) {
	log, _, buf := newTestLogger(t, "text")
	section := backends.StartSection(log, "prepare_images", "Pulling images")
	log.Info("inside")
	section.End()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines %q, want start, inside and end", len(lines), lines)
	}
	start := regexp.MustCompile(`^\x1b\[0Ksection_start:\d+:prepare_images\r\x1b\[0K.*Pulling images`)
	end := regexp.MustCompile(`^\x1b\[0Ksection_end:\d+:prepare_images\r\x1b\[0K$`)
	if !start.MatchString(lines[0]) || lines[1] != "inside" || !end.MatchString(lines[2]) {
		t.Errorf("got %q, want GitLab's section markers around the line", lines)
	}

	log, _, buf = newTestLogger(t, "json")
	backends.StartSection(log, "prepare_dind", "Starting the DinD sidecar").End()
	var entries []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		entries = append(entries, e)
	}
	if len(entries) != 2 || entries[0]["section_edge"] != "start" || entries[1]["section_edge"] != "end" ||
		entries[1]["section"] != "prepare_dind" || entries[1]["section_seconds"] == nil {
		t.Errorf("got %v, want a start entry and an end entry with its duration", entries)
	}
	if strings.Contains(buf.String(), "section_start") {
		t.Errorf("got GitLab markers in the JSON log %q", buf.String())
	}
}

func TestJSONLogCarriesTheJobOnEveryLine(t *testing.T) {
	log, _, buf := newTestLogger(t, "json")
	d := &Driver{Log: log}
	log.Info("before")
	d.tag(FieldStage, "prepare")
	d.tagJob(42, 7, "group/project")
	d.tag(FieldBackend, "dind")
	log.WithField(FieldStage, "own").Warn("after")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"job_id": float64(42), "project_id": float64(7), "project": "group/project", "backend": "dind", "stage": "own"}
	for k, v := range want {
		if last[k] != v {
			t.Errorf("field %s: got %v, want %v (entry %v)", k, last[k], v, last)
		}
	}

	text, _, tbuf := newTestLogger(t, "text")
	(&Driver{Log: text}).tagJob(42, 7, "group/project")
	text.Info("plain")
	if tbuf.String() != "plain\n" {
		t.Errorf("text log: got %q, want the job log free of admin fields", tbuf.String())
	}
}
