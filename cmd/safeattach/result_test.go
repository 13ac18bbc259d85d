package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/internal/testenv"
)

// readmeResultTable returns the rows of README.md's "### JSON results"
// table: each field's name (the first cell, one `name`) and its meaning.
func readmeResultTable(t *testing.T) (fields []string, meaning map[string]string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, found := strings.Cut(string(data), "\n### JSON results\n")
	if !found {
		t.Fatal(`README.md has no "### JSON results" section`)
	}
	if i := strings.Index(section, "\n#"); i >= 0 {
		section = section[:i]
	}
	name := regexp.MustCompile("^`([a-z_]+)`$")
	meaning = map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.SplitN(strings.TrimSpace(line), "|", 3)
		if len(cells) < 3 || cells[0] != "" {
			continue // not a table row
		}
		first, rest := strings.TrimSpace(cells[1]), strings.TrimSuffix(strings.TrimSpace(cells[2]), "|")
		if first == "field" || strings.Trim(first, "-") == "" {
			continue // the header and its rule
		}
		m := name.FindStringSubmatch(first)
		if m == nil {
			t.Fatalf("README.md, JSON results: a row whose first cell is not one `field`: %q", line)
		}
		if _, dup := meaning[m[1]]; dup {
			t.Errorf("README.md, JSON results: %s is listed twice", m[1])
		}
		fields = append(fields, m[1])
		meaning[m[1]] = rest
	}
	if len(fields) == 0 {
		t.Fatal("README.md, JSON results: no table rows")
	}
	return fields, meaning
}

// jsonFields returns the JSON names of a struct type's fields.
func jsonFields(typ reflect.Type) []string {
	var out []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			out = append(out, jsonFields(f.Type)...) // encoding/json flattens it
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// TestJSONResultFieldsDocumented: README.md's JSON results table lists
// every field of the result type and no other; where a row names the
// fields of the object the field holds (`profile`, `verdict` with its
// `findings[]`, `profiler_owner`), it names each of those and no other.
func TestJSONResultFieldsDocumented(t *testing.T) {
	documented, meaning := readmeResultTable(t)
	emitted := jsonFields(reflect.TypeFor[profiling.JSONResult]())
	for _, f := range emitted {
		if !slices.Contains(documented, f) {
			t.Errorf("the result has %q, which README.md's JSON results table does not document", f)
		}
	}
	for _, f := range documented {
		if !slices.Contains(emitted, f) {
			t.Errorf("README.md's JSON results table documents %q, which the result does not have", f)
		}
	}
	named := regexp.MustCompile("`([a-z_]+)(?:\\[\\])?`")
	for field, types := range map[string][]reflect.Type{
		"profile":        {reflect.TypeFor[profiling.JSONProfile]()},
		"verdict":        {reflect.TypeFor[conflicts.Verdict](), reflect.TypeFor[conflicts.Finding]()},
		"profiler_owner": {reflect.TypeFor[profiling.Owner]()},
	} {
		var want []string
		for _, typ := range types {
			want = append(want, jsonFields(typ)...)
		}
		var got []string
		for _, m := range named.FindAllStringSubmatch(meaning[field], -1) {
			got = append(got, m[1])
		}
		for _, f := range want {
			if !slices.Contains(got, f) {
				t.Errorf("README.md, JSON results, %s: %q is not named", field, f)
			}
		}
		for _, f := range got {
			if !slices.Contains(want, f) {
				t.Errorf("README.md, JSON results, %s: %q names no field", field, f)
			}
		}
	}
}

// TestJSONResultShape: load, jcmd and profile print one JSON shape for
// every outcome, with the outcome and the exit code the process gives.
func TestJSONResultShape(t *testing.T) {
	t.Parallel()
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	fixed := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	out := filepath.Join(t.TempDir(), "p.collapsed")
	sleeper := testenv.StartSleeper(t)
	resultFields, _ := readmeResultTable(t)
	for _, tc := range []struct {
		name    string
		args    []string
		outcome string
		code    int
		has     []string
	}{
		{"load ok", []string{"load", "--json", pid, testenv.BuildAgent(t, testenv.AgentRecordOptions), "x=1"}, "ok", exitOK, []string{"verdict", "agent", "loaded_from"}},
		{"load refused", []string{"load", "--json", fmt.Sprint(sleeper.PID), fixed}, "refused", exitRefused, []string{"verdict", "error"}},
		{"load failed", []string{"load", "--json", pid, testenv.BuildAgent(t, testenv.AgentFailRC)}, "failed", exitFailed, []string{"error", "agent"}},
		{"jcmd ok", []string{"jcmd", "--json", pid, "VM.version"}, "ok", exitOK, []string{"output"}},
		{"profile ok", []string{"profile", "--json", "--agent", fixed, "-d", "1", "-f", out, pid}, "ok", exitOK, []string{"profile", "agent_log"}},
		{"profile agent error", []string{"profile", "--json", "--agent", fixed, "-e", "nosuch", "-d", "1", "-f", out, pid}, "failed", exitFailed, []string{"agent_log", "error"}},
		{"load timed out", []string{"load", "--json", "--timeout", "3s", pid, testenv.BuildAgent(t, testenv.AgentBlockForever)}, "timed-out", exitTimedOut, []string{"hang_report", "error"}},
	} {
		stdout, stderr, code := runCLI(t, tc.args...)
		var m map[string]any
		if err := json.Unmarshal([]byte(stdout), &m); err != nil {
			t.Errorf("%s: not one JSON object (%v):\n%s\n%s", tc.name, err, stdout, stderr)
			continue
		}
		if code != tc.code || m["outcome"] != tc.outcome || m["exit_code"] != float64(code) || m["schema_version"] != float64(1) {
			t.Errorf("%s: exit %d, result outcome %v exit_code %v schema %v", tc.name, code, m["outcome"], m["exit_code"], m["schema_version"])
		}
		for k := range m {
			if !slices.Contains(resultFields, k) {
				t.Errorf("%s: undocumented field %q", tc.name, k)
			}
		}
		for _, k := range tc.has {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no %q in %s", tc.name, k, stdout)
			}
		}
		if d, ok := m["duration_ms"].(float64); !ok || d < 0 {
			t.Errorf("%s: duration_ms %v", tc.name, m["duration_ms"])
		}
	}
}
