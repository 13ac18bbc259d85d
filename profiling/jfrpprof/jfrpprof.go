package jfrpprof

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"
	jfrpprof "github.com/grafana/jfr-parser/pprof"
)

// Profile is one sample type's profile from a recording.
type Profile struct {
	// Metric names what was sampled, as jfr-parser names it: process_cpu,
	// wall, memory (allocations), mutex (locks), block...
	Metric string
	// Profile is the decoded, validated profile.
	Profile *profile.Profile
	// Engine says what made the recording and so which frames its
	// stacks can hold: EngineJFR or EngineAsyncProfiler.
	Engine string
}

// What made a recording, as a reader of its stacks needs to know it.
// async-profiler names the event it sampled in the recording's settings;
// the JDK's own Flight Recorder does not.
const (
	EngineJFR           = "JFR, Java frames only: no native or kernel frames"
	EngineAsyncProfiler = "async-profiler's JFR output: Java and native frames"
)

// sampleRate is the rate given to the parser for CPU and wall samples:
// it weighs each one as 1/sampleRate s of time. The folded stacks count
// samples, and divide by that weight again.
const sampleRate = 100

// MaxJFR caps the recording converted (a JFR window of a busy service is
// a few MiB; a day-long one a few hundred).
const MaxJFR = 1 << 30

// Convert decodes a JFR recording made between start and end into one
// profile per sample type, in a stable order (by metric).
func Convert(jfr []byte, start, end time.Time) ([]Profile, error) {
	if len(jfr) > MaxJFR {
		return nil, fmt.Errorf("jfr: %d bytes exceeds %d", len(jfr), MaxJFR)
	}
	if len(jfr) < 4 || string(jfr[:4]) != "FLR\x00" {
		return nil, errors.New("jfr: not a JFR recording (no FLR header)")
	}
	res, err := jfrpprof.ParseJFR(jfr, &jfrpprof.ParseInput{StartTime: start, EndTime: end, SampleRate: sampleRate}, new(jfrpprof.LabelsSnapshot))
	if err != nil {
		return nil, fmt.Errorf("jfr: %w", err)
	}
	engine := EngineJFR
	if res.JFREvent != "" {
		engine = EngineAsyncProfiler
	}
	var out []Profile
	for _, p := range res.Profiles {
		raw, err := p.Profile.MarshalVT()
		if err != nil {
			return nil, fmt.Errorf("jfr: encode %s: %w", p.Metric, err)
		}
		// Through google/pprof: checks the profile and gives callers the
		// standard type.
		pp, err := profile.ParseData(raw)
		if err != nil {
			return nil, fmt.Errorf("jfr: %s: %w", p.Metric, err)
		}
		if err := pp.CheckValid(); err != nil {
			return nil, fmt.Errorf("jfr: %s: %w", p.Metric, err)
		}
		out = append(out, Profile{Metric: p.Metric, Profile: pp, Engine: engine})
	}
	if len(out) == 0 {
		return nil, errors.New("jfr: the recording holds no samples")
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Metric < out[b].Metric })
	return out, nil
}

// Pick returns the profile for the event the user sampled (cpu, itimer
// and ctimer are CPU time; wall; alloc; lock). A known event the
// recording has no profile of is an error naming what it has (a JDK's
// Flight Recorder records no wall-clock samples; a recording may hold no
// allocation events): a profile of another metric under the event's
// name would mislead. Any other event (page-faults, a Java method) is the
// first profile, what async-profiler recorded for it.
func Pick(ps []Profile, event string) (Profile, error) {
	want, known := map[string]string{"cpu": "process_cpu", "itimer": "process_cpu", "ctimer": "process_cpu", "wall": "wall", "alloc": "memory", "lock": "mutex"}[event]
	var have []string
	for _, p := range ps {
		if p.Metric == want {
			return p, nil
		}
		have = append(have, p.Metric)
	}
	if known {
		return Profile{}, fmt.Errorf("jfr: the recording holds no %s profile for -e %s (it has: %s)", want, event, strings.Join(have, ", "))
	}
	return ps[0], nil
}

// Encode writes p as a gzipped profile.proto, the form `go tool pprof`
// reads.
func Encode(p *profile.Profile) ([]byte, error) {
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
