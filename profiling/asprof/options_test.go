package asprof

import (
	"errors"
	"testing"
)

// TestSpelling: each option as async-profiler 4.5's launcher
// (src/main/main.cpp) writes it into the agent's arguments.
func TestSpelling(t *testing.T) {
	for _, c := range []struct {
		name           string
		o              Options
		profiling, out string
	}{
		{"defaults: no event", Options{}, "", ""},
		{"-e cpu -i 10ms", Options{Event: "cpu", Interval: "10ms"}, "event=cpu,interval=10ms", ""},
		{"PMU event", Options{Event: "cpu/umask=0x1,event=0xd3/"}, "event=cpu/umask=0x1:event=0xd3/", ""},
		{"-j as text", Options{JStackDepth: "50/20"}, "jstackdepth=50/20", ""},
		{"--alloc alone", Options{Alloc: "1"}, "alloc=1", ""},
		{"thresholds", Options{Lock: "10us", NativeLock: "1ms", Wall: "20ms", NativeMem: "1m", Trace: []string{"a.B.c", "x.Y.z:10ms"}},
			"nativemem=1m,nativelock=1ms,lock=10us,wall=20ms,trace=a.B.c,trace=x.Y.z:10ms", ""},
		{"switches", Options{All: true, Live: true, NoBatch: true, NoFree: true, NoStop: true, RecordCPU: true, Sched: true, TLAB: true, TTSP: true, AllUser: true, Threads: true},
			"threads,all,live,nobatch,nofree,nostop,record-cpu,sched,tlab,ttsp,alluser", ""},
		{"values", Options{ChunkSize: "10m", ChunkTime: "1h", CStack: "dwarf", Signal: "44", Clock: "tsc", Begin: "f", End: "g", TargetCPU: "3", Proc: "30s", MemLimit: "1g"},
			"chunksize=10m,chunktime=1h,cstack=dwarf,signal=44,clock=tsc,begin=f,end=g,target-cpu=3,proc=30s,memlimit=1g", ""},
		{"jfr", Options{JFRSync: "profile", JFROpts: "mem"}, "jfrsync=profile,jfropts=mem", ""},
		{"output", Options{Simple: true, Norm: true, Sig: true, Ann: true, Lib: true, Dot: true, Include: []string{"*A*"}, Exclude: []string{"*B*"}, LogLevel: "warn",
			Features: []string{"vtable", "comptask"}, Filter: "1,2", Title: "<a&b>,c", Width: "1200", Height: "16", MinWidth: "0.5", Reverse: true, Inverted: true, Samples: true, Total: true},
			"", "simple,norm,sig,ann,lib,dot,include=*A*,exclude=*B*,loglevel=warn,features=vtable+comptask,filter=1;2,title=&lt;a&amp;b&gt;&#44;c,width=1200,height=16,minwidth=0.5,reverse,inverted,samples,total"},
	} {
		p, err := c.o.Profiling()
		if err != nil || p != c.profiling {
			t.Errorf("%s: profiling %q %v, want %q", c.name, p, err, c.profiling)
		}
		out, err := c.o.Output()
		if err != nil || out != c.out {
			t.Errorf("%s: output %q %v, want %q", c.name, out, err, c.out)
		}
	}
}

// TestNothingSmuggled: a value that would add options of its own — an
// annotation, an API request — is refused with the option's name.
func TestNothingSmuggled(t *testing.T) {
	for _, o := range []Options{
		{Event: "itimer,interval=1,jstackdepth=4096"},
		{Interval: "1ms,file=/etc/passwd"},
		{Include: []string{"a,log=/tmp/x"}},
		{JFRSync: "profile\nstart"},
		{MinWidth: "0.5\x00"},
		{Trace: []string{"a,b"}},
	} {
		if err := o.Validate(); !errors.Is(err, ErrBadValue) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	// What asprof rewrites is allowed: its commas are gone afterwards.
	if err := (Options{Title: "a,b", Filter: "1,2", Event: "cpu/a=1,b=2/"}).Validate(); err != nil {
		t.Errorf("rewritten values refused: %v", err)
	}
}

func TestWantsJFR(t *testing.T) {
	if (Options{}).WantsJFR() || !(Options{JFRSync: "default"}).WantsJFR() || !(Options{JFROpts: "mem"}).WantsJFR() {
		t.Error("WantsJFR")
	}
}

// FuzzOptions: whatever values are given, the options either are refused
// or hold no ',' beyond the separators, no control character, and as
// many options as were set.
func FuzzOptions(f *testing.F) {
	f.Add("cpu", "10ms", "*Foo*", "t,i<t>le")
	f.Add("itimer,interval=1", "1\n2", "", "")
	f.Fuzz(func(t *testing.T, event, interval, include, title string) {
		o := Options{Event: event, Interval: interval, Title: title}
		if include != "" {
			o.Include = []string{include}
		}
		p, err := o.Profiling()
		if err != nil {
			return
		}
		out, err := o.Output()
		if err != nil {
			return
		}
		want := 0
		for _, v := range []string{event, interval} {
			if v != "" {
				want++
			}
		}
		if n := count(p); n != want {
			t.Fatalf("%q: %d options, want %d", p, n, want)
		}
		want = 0
		for _, v := range []string{include, title} {
			if v != "" {
				want++
			}
		}
		if n := count(out); n != want {
			t.Fatalf("%q: %d options, want %d", out, n, want)
		}
	})
}

func count(s string) int {
	if s == "" {
		return 0
	}
	n := 1
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			n++
		}
	}
	return n
}

// TestMainEvent: what a progress line and a result name when -e is not
// given (it printed "()").
func TestMainEvent(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{}, "cpu"},
		{Options{Event: "itimer"}, "itimer"},
		{Options{Alloc: "1m"}, "alloc"},
		{Options{Alloc: "1m", All: true}, "cpu"},
		{Options{Wall: "10ms"}, "wall"},
		{Options{Lock: "1ms", Wall: "10ms"}, "lock"},
	} {
		if got := c.o.MainEvent(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.o, got, c.want)
		}
	}
}
