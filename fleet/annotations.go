package fleet

import (
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling"
)

// What annotation values may be: they come from the pod's author, and
// end up in the agent's option string and in Pyroscope's series name.
var (
	// eventValue is an async-profiler event: a name (cpu, itimer,
	// alloc, page-faults), a tracepoint (sched:sched_switch) or a Java
	// method (java.util.Properties.getProperty) — never a "," or "=",
	// which would add options of the pod's choosing.
	eventValue = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.$:-]{0,127}$`)
	// serviceValue is a Pyroscope application name: no "{", "}", ","
	// or "=", which would add labels.
	serviceValue = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$`)
)

// Longest values accepted, in bytes. Each is well under what kube keeps
// of a value (longer ones are kept cut): a cut value is always refused,
// never read as something shorter the pod did not write.
const (
	maxEventAnnotation   = 128
	maxServiceAnnotation = 128
	// A window is a few characters ("10m", "90s", "1m30s"); a long one
	// is padding ("000…020s") that a cut could turn valid.
	maxWindowAnnotation = 32
)

// annotationRefusal is an annotation the daemon does not use: which, the
// value as the pod wrote it, why, and what it wants instead. A nil
// *annotationRefusal is an annotation used (or absent).
type annotationRefusal struct {
	annotation, value, reason, want string
}

// log warns of a refusal, with the value used instead; the value is the
// pod's text, logged cut and escaped.
func (r *annotationRefusal) log(l *slog.Logger, using any) {
	if r == nil {
		return
	}
	l.Warn("annotation refused", "annotation", r.annotation, "value", logValue(r.value), "reason", r.reason, "want", r.want, "using", using)
}

// textRefusal says why s is not a value valid accepts (max bytes at
// most), or "" when it is one.
func textRefusal(s string, valid *regexp.Regexp, max int) string {
	switch {
	case valid.MatchString(s):
		return ""
	case s == "":
		return "empty"
	case len(s) > max:
		return fmt.Sprintf("longer than %d bytes", max)
	case printable.Line(s) != s:
		return "control or invisible characters, or not UTF-8"
	}
	return "characters or a first character it may not have"
}

// eventAnnotation is the event the pod's annotations ask for, or def.
func eventAnnotation(ann map[string]string, def string) (string, *annotationRefusal) {
	s, ok := ann[AnnotationEvent]
	if !ok {
		return def, nil
	}
	if why := textRefusal(s, eventValue, maxEventAnnotation); why != "" {
		return def, &annotationRefusal{AnnotationEvent, s, why, "an async-profiler event name: a letter or _, then letters, digits and _ . $ : -"}
	}
	return s, nil
}

// windowAnnotation is the window the pod's annotations ask for, or def.
func windowAnnotation(ann map[string]string, def time.Duration) (time.Duration, *annotationRefusal) {
	s, ok := ann[AnnotationWindow]
	if !ok {
		return def, nil
	}
	refuse := func(why string) (time.Duration, *annotationRefusal) {
		return def, &annotationRefusal{AnnotationWindow, s, why, fmt.Sprintf("a duration from %v to %v", MinWindow, MaxWindow)}
	}
	if len(s) > maxWindowAnnotation {
		return refuse(fmt.Sprintf("longer than %d bytes", maxWindowAnnotation))
	}
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return refuse("not a duration")
	case v < MinWindow:
		return refuse("too short")
	case v > MaxWindow:
		return refuse("too long")
	}
	return v, nil
}

// fallbackAnnotation is the engine that profiles the pod's JVM where
// async-profiler is refused, as its annotation says (jfr, none), or def.
func fallbackAnnotation(ann map[string]string, def profiling.Engine) (profiling.Engine, *annotationRefusal) {
	s, ok := ann[AnnotationFallback]
	switch {
	case !ok:
		return def, nil
	case s == "none":
		return "", nil
	case s == string(profiling.FlightRecorder):
		return profiling.FlightRecorder, nil
	}
	why := "not an engine"
	if printable.Line(s) != s {
		why = "control or invisible characters, or not UTF-8"
	}
	return def, &annotationRefusal{AnnotationFallback, s, why, "jfr or none"}
}

// serviceAnnotation is the Pyroscope service a container's windows are
// pushed as: the pod's annotation, or <namespace>/<container>.
func serviceAnnotation(pod kube.Pod, container string) (string, *annotationRefusal) {
	def := pod.Namespace + "/" + container
	s := pod.Annotations[AnnotationService]
	if s == "" {
		return def, nil
	}
	if why := textRefusal(s, serviceValue, maxServiceAnnotation); why != "" {
		return def, &annotationRefusal{AnnotationService, s, why, "letters, digits and _ . : / -, not first . : / -"}
	}
	return s, nil
}
