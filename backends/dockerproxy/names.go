package dockerproxy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berthci/berth/backends"
)

// Names a job gives to images by tag, build -t or load stay in the
// engine's shared store after the job, where a name another project's job
// later asks for would find them: a loaded image has no labels to be
// removed by. So the guard writes each new name it lets a job give into a
// record in the job's socket directory, which the job cannot reach (it
// mounts only the socket), and the backend's cleanup removes those names
// (untags them; an image left without a name and not in use goes with
// it). Names the job pulled stay, as with the docker executor: a pull
// gives a name the registry's content.

// givenNamesFile is the record's name in the job's socket directory.
const givenNamesFile = "given-names"

// recordName appends name to the filter's record of given names.
func (f *Filter) recordName(name string) error {
	if f.namesFile == "" {
		return nil
	}
	if strings.ContainsAny(name, "\n\r") {
		return refuse("image name %q is not valid", name)
	}
	f.namesMu.Lock()
	defer f.namesMu.Unlock()
	file, err := os.OpenFile(f.namesFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("record the image name %q for the job's cleanup: %w", name, err)
	}
	if _, err := file.WriteString(name + "\n"); err != nil {
		file.Close()
		return fmt.Errorf("record the image name %q for the job's cleanup: %w", name, err)
	}
	return file.Close()
}

// GivenNames returns the image names the guard let the job give, for its
// cleanup: none when the job had no guard.
func GivenNames(job *backends.Job) ([]string, error) {
	file, err := os.Open(filepath.Join(JobDir(job), givenNamesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the image names the job gave: %w", err)
	}
	defer file.Close()
	seen := map[string]bool{}
	var names []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if name := sc.Text(); name != "" && !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the image names the job gave: %w", err)
	}
	return names, nil
}
