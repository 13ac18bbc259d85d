package budget

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

func TestBufferIsChargedAndReleased(t *testing.T) {
	b := New(1 << 20)
	w := b.Buffer(600 << 10)
	if err := w.Reserve(500 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 500<<10)); err != nil {
		t.Fatal(err)
	}
	if b.Used() != 500<<10 {
		t.Fatalf("used %d after reserving exactly 500 KiB", b.Used())
	}
	// Past the buffer's own cap: nothing allocated, nothing charged.
	if _, err := w.Write(make([]byte, 200<<10)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the buffer's max: %v", err)
	}
	other := b.Buffer(1 << 20)
	if err := other.Reserve(600 << 10); !errors.Is(err, ErrExhausted) {
		t.Fatalf("over the shared budget: %v", err)
	}
	if b.Used() != 500<<10 {
		t.Fatalf("a refused reservation was charged: %d", b.Used())
	}
	w.Release()
	w.Release()
	if b.Used() != 0 || w.Len() != 0 {
		t.Fatalf("after release: used %d, len %d", b.Used(), w.Len())
	}
	if err := other.Reserve(600 << 10); err != nil {
		t.Fatalf("after release: %v", err)
	}
	other.Release()
}

// TestWritesNeverExceedTheBudget: many writers at once, each growing by
// small writes, never hold more than the budget between them.
func TestWritesNeverExceedTheBudget(t *testing.T) {
	b := New(256 << 10)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := b.Buffer(64 << 10)
			defer w.Release()
			for j := 0; j < 100; j++ {
				if _, err := w.Write(make([]byte, 1000)); err != nil {
					if !errors.Is(err, ErrExhausted) && !errors.Is(err, ErrTooLarge) {
						t.Error(err)
					}
					return
				}
				if u := b.Used(); u > b.Total() {
					t.Errorf("used %d > total %d", u, b.Total())
				}
			}
		}()
	}
	wg.Wait()
	if b.Used() != 0 {
		t.Fatalf("%d bytes still charged", b.Used())
	}
}

func TestLimitFromFixtures(t *testing.T) {
	write := func(root, p, s string) {
		p = filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v1 := t.TempDir()
	write(v1, "proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/kubepods/pod1/abc\n0::/\n")
	write(v1, "sys/fs/cgroup/memory/kubepods/pod1/abc/memory.stat", "cache 0\nhierarchical_memory_limit 134217728\n")
	write(v1, "sys/fs/cgroup/memory/kubepods/pod1/abc/memory.limit_in_bytes", "9223372036854771712\n")
	v2 := t.TempDir()
	write(v2, "proc/self/cgroup", "0::/kubepods.slice/pod1/ctr\n")
	write(v2, "sys/fs/cgroup/kubepods.slice/pod1/ctr/memory.max", "max\n")
	write(v2, "sys/fs/cgroup/kubepods.slice/pod1/memory.max", "268435456\n")
	write(v2, "sys/fs/cgroup/kubepods.slice/memory.max", "1073741824\n")
	none := t.TempDir()
	write(none, "proc/self/cgroup", "0::/\n")
	write(none, "sys/fs/cgroup/memory.max", "max\n")
	for root, want := range map[string]int64{v1: 128 << 20, v2: 256 << 20, none: 0} {
		got, err := Limit(root)
		if want == 0 {
			if !errors.Is(err, ErrNoLimit) {
				t.Errorf("no limit: %d %v", got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", root, got, err, want)
		}
	}
}

// TestLiveLimitInAMemoryCgroup: a process in a 128 MiB memory cgroup
// reads that limit.
func TestLiveLimitInAMemoryCgroup(t *testing.T) {
	if os.Getenv("BUDGET_PRINT_LIMIT") == "1" {
		l, err := Limit("")
		fmt.Println(l, err)
		os.Exit(0)
	}
	testenv.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLiveLimitInAMemoryCgroup$")
	cmd.Env = append(os.Environ(), "BUDGET_PRINT_LIMIT=1")
	out, err := testenv.RunInMemoryCgroup(t, cmd, 128<<20)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got, _ := strconv.ParseInt(strings.Fields(out)[0], 10, 64)
	if got != 128<<20 {
		t.Fatalf("limit inside a 128 MiB cgroup: %q", out)
	}
}
