package profiling

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/safeattach/safeattach/internal/proc"
)

// TestPruneStartStates: a state whose JVM is gone (no process of that
// pid and start time) is removed when a session takes a profiler; the
// state of a process that runs is kept. The test judges only the two
// files it made.
func TestPruneStartStates(t *testing.T) {
	dir, err := startStateDir()
	if err != nil {
		t.Fatal(err)
	}
	st, err := proc.FS{}.Proc(os.Getpid()).Stat()
	if err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, fmt.Sprintf("%d-%d-1-1.json", os.Getpid(), st.StartTime))
	gone := filepath.Join(dir, fmt.Sprintf("%d-%d-1-1.json", os.Getpid(), st.StartTime+1)) // a restarted pid
	for _, f := range []string{live, gone} {
		if err := os.WriteFile(f, []byte(`{"session":"x"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(f) })
	}
	pruneStartStates()
	if _, err := os.Stat(gone); err == nil {
		t.Error("the state of a JVM that is gone was kept")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the state of a running process was removed: %v", err)
	}
}
