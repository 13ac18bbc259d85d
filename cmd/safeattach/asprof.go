package main

import (
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// asprofFlags are asprof's options that are the agent's business: they
// are passed through as asprof's launcher spells them in the agent's
// argument string (README, "asprof options").
type asprofFlags struct {
	threads, allUser, reverse, total bool
	jstackDepth                      int
	include, exclude                 []string
	cstack, title, minWidth          string
	jfrSync, features                string
	chunkSize, chunkTime             string
}

func (a *asprofFlags) register(f *pflag.FlagSet) {
	f.BoolVarP(&a.threads, "threads", "t", false, "profile threads separately")
	f.BoolVar(&a.allUser, "all-user", false, "only include user-mode events")
	f.IntVarP(&a.jstackDepth, "jstackdepth", "j", 0, "maximum Java stack depth")
	f.StringArrayVarP(&a.include, "include", "I", nil, "output only stack traces containing the pattern (repeatable)")
	f.StringArrayVarP(&a.exclude, "exclude", "X", nil, "exclude stack traces with the pattern (repeatable)")
	f.StringVar(&a.cstack, "cstack", "", "how to walk native frames: fp, dwarf, lbr, vm, no")
	f.StringVar(&a.title, "title", "", "flame graph title")
	f.StringVar(&a.minWidth, "minwidth", "", "skip frames smaller than PERCENT")
	f.BoolVar(&a.reverse, "reverse", false, "generate stack-reversed flame graph or tree")
	f.BoolVar(&a.total, "total", false, "accumulate the total value (time, bytes) instead of samples")
	f.StringVar(&a.jfrSync, "jfrsync", "", "synchronize with a JFR recording using CONFIG")
	f.StringVarP(&a.features, "features", "F", "", "advanced stack trace features (vtable, comptask, ...)")
	f.StringVar(&a.chunkSize, "chunksize", "", "approximate size of a JFR chunk")
	f.StringVar(&a.chunkTime, "chunktime", "", "duration of a JFR chunk")
}

// options appends the given flags, in the agent's syntax, to extra.
func (a *asprofFlags) options(extra string) string {
	var o []string
	if extra != "" {
		o = append(o, extra)
	}
	add := func(cond bool, s string) {
		if cond {
			o = append(o, s)
		}
	}
	add(a.threads, "threads")
	add(a.allUser, "alluser")
	add(a.jstackDepth > 0, "jstackdepth="+strconv.Itoa(a.jstackDepth))
	for _, p := range a.include {
		o = append(o, "include="+p)
	}
	for _, p := range a.exclude {
		o = append(o, "exclude="+p)
	}
	add(a.cstack != "", "cstack="+a.cstack)
	add(a.title != "", "title="+a.title)
	add(a.minWidth != "", "minwidth="+a.minWidth)
	add(a.reverse, "reverse")
	add(a.total, "total")
	add(a.jfrSync != "", "jfrsync="+a.jfrSync)
	add(a.features != "", "features="+a.features)
	add(a.chunkSize != "", "chunksize="+a.chunkSize)
	add(a.chunkTime != "", "chunktime="+a.chunkTime)
	return strings.Join(o, ",")
}
