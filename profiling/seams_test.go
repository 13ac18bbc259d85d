package profiling

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveContainerProfilesRepeatedly: a containerised JVM (private /tmp)
// profiled ten times in a row — each delivery finds the copy of the same
// bytes already there and loaded, and exactly one copy remains.
func TestLiveContainerProfilesRepeatedly(t *testing.T) {
	t.Parallel()
	_, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	out := filepath.Join(t.TempDir(), "p.collapsed")
	for i := 0; i < 10; i++ {
		res, err := Profile(context.Background(), jvm, ProfileRequest{SessionRequest: SessionRequest{Lib: lib, Output: out}, Duration: 200 * time.Millisecond})
		if err != nil {
			t.Fatalf("profile %d: %v", i+1, err)
		}
		if !strings.HasPrefix(res.LoadedFrom, "/tmp/.safeattach/") {
			t.Errorf("profile %d loaded from %q", i+1, res.LoadedFrom)
		}
	}
	if got := testenv.StoreEntries(jvm, "/tmp"); len(got) != 1 {
		t.Errorf("want one copy in the container, have %v", got)
	}
}
