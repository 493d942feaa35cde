package backends

import (
	"time"

	"github.com/sirupsen/logrus"
)

// Fields of a job log section's two entries. The job log's formatter turns
// them into GitLab's collapsible section markers; the JSON formatter keeps
// them as fields.
const (
	// FieldSection is the section's name: letters, digits, '_', '.', '-'.
	FieldSection = "section"
	// FieldSectionEdge is SectionStart or SectionEnd.
	FieldSectionEdge = "section_edge"
	// FieldSectionSeconds is the section's duration, on its end entry.
	FieldSectionSeconds = "section_seconds"
)

// The edges of a section.
const (
	SectionStart = "start"
	SectionEnd   = "end"
)

// Section is one phase of a stage in the job log, such as pulling the
// images or waiting for the services.
type Section struct {
	log   logrus.FieldLogger
	name  string
	start time.Time
}

// StartSection opens the section name with header as its title. The
// caller ends it with [Section.End], also when the phase fails: the lines
// of the failure stay inside it.
func StartSection(log logrus.FieldLogger, name, header string) *Section {
	log.WithFields(logrus.Fields{FieldSection: name, FieldSectionEdge: SectionStart}).Info(header)
	return &Section{log: log, name: name, start: time.Now()}
}

// End closes the section.
func (s *Section) End() {
	d := time.Since(s.start).Round(time.Millisecond)
	s.log.WithFields(logrus.Fields{
		FieldSection:        s.name,
		FieldSectionEdge:    SectionEnd,
		FieldSectionSeconds: d.Seconds(),
	}).Info("done in " + d.String())
}
