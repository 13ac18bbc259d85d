package preflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/safeattach/safeattach/internal/elfx"
	"github.com/safeattach/safeattach/internal/safefile"
)

// jemalloc facts (docs/detection.md, "jemalloc: is heap profiling on?"):
//
//	version      "<maj>.<min>.<patch>-<n>-g<40 hex>" in read-only data
//	prof built   the prof code's messages ("Run jeprof ...") survive only
//	             in builds with --enable-prof
//	unwinder     DT_NEEDED libunwind or import unw_backtrace: libunwind;
//	             import _Unwind_Backtrace: whatever wins symbol lookup —
//	             libunwind.so.8 exports unversioned _Unwind_* aliases, so a
//	             preloaded libunwind serves jemalloc before libgcc_s (which
//	             arrives later, as a DT_NEEDED dependency)
//	options      read once at start-up, later sources override earlier:
//	               1. compiled in (--with-malloc-conf; not visible here)
//	               2. the <prefix>malloc_conf char* global that wins symbol
//	                  lookup (the executable's if it exports one)
//	               3. the target name of the /etc/<prefix>malloc.conf symlink
//	               4. the <PREFIX>MALLOC_CONF environment variable
const (
	jemallocNeedle = "<jemalloc>: "
	jeprofNeedle   = "Run jeprof"
)

// jemallocVersion matches "<maj>.<min>.<patch>-<n>-g<7..40 hex>". The
// hex run is length-checked in code: a {7,40} repetition would compile to
// forty copies at start-up, which a CLI run pays for on every invocation.
var jemallocVersion = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+)-[0-9]+-g([0-9a-f]+)$`) })

// maxConfLen caps the malloc_conf string read from the target's memory.
const maxConfLen = 4096

func (in *inspection) inspectJemalloc(ctx context.Context) {
	je := &in.r.Jemalloc
	var lib *mappedLib
	var info *elfx.Info
	for _, l := range in.libs {
		if !strings.HasPrefix(filepath.Base(l.path), "libjemalloc") {
			continue
		}
		i, err := in.probe(l)
		if err != nil {
			in.unknown("jemalloc.present", "%s: %v", l.path, err)
			continue
		}
		if !i.Defines("malloc") {
			// A prefixed copy (je_malloc...) serves only the library that
			// links it, not the agent's mallocs.
			je.Evidence = append(je.Evidence, l.path+" is mapped but does not export malloc (prefixed build, not process-wide)")
			continue
		}
		lib, info = l, i
		break
	}
	if lib == nil && in.exe != nil {
		if i, err := in.probe(in.exe); err == nil && i.Needles[jemallocNeedle] != "" && i.Defines("malloc") {
			lib, info = in.exe, i
			je.Via = ViaStatic
			je.Evidence = append(je.Evidence, in.exe.path+" contains jemalloc and exports malloc (statically linked)")
		}
	}
	if lib == nil {
		return
	}
	je.Present, je.Path = true, lib.path
	if je.Via == "" {
		je.Via = in.via(ctx, lib)
		je.Evidence = append(je.Evidence, "maps "+lib.path+" (via "+string(je.Via)+")")
	}
	for _, s := range info.Defined {
		if p, ok := strings.CutSuffix(s.Name, "mallctl"); ok && len(p) < 16 {
			je.Prefix = p
			break
		}
	}
	for _, lit := range info.VersionLiterals {
		if m := jemallocVersion().FindStringSubmatch(lit); m != nil && len(m[2]) >= 7 && len(m[2]) <= 40 {
			je.Version = m[1]
			je.Evidence = append(je.Evidence, fmt.Sprintf("version literal %q", lit))
			break
		}
	}
	if je.Version == "" {
		in.unknown("jemalloc.version", "no version literal in %s", lib.path)
	}
	je.ProfBuilt = No
	if info.Needles[jeprofNeedle] != "" {
		je.ProfBuilt = Yes
		je.Evidence = append(je.Evidence, "built with profiling (prof messages in read-only data)")
	}
	in.jemallocUnwinder(ctx, lib, info)
	in.jemallocConf(ctx, lib, info)
	in.addLibrary(RoleAllocator, "jemalloc", lib, je.Version)
}

func (in *inspection) jemallocUnwinder(ctx context.Context, lib *mappedLib, info *elfx.Info) {
	je := &in.r.Jemalloc
	if n, ok := info.NeedsPrefix("libunwind"); ok || info.Imports("unw_backtrace") {
		je.Unwinder = UnwinderLibunwind
		je.Evidence = append(je.Evidence, fmt.Sprintf("linked against libunwind (DT_NEEDED %q or imports unw_backtrace)", n))
		return
	}
	if !info.Imports("_Unwind_Backtrace") {
		if je.ProfBuilt == Yes {
			je.Unwinder = "gcc-builtin"
			je.Evidence = append(je.Evidence, "imports no unwinder (frame-pointer backtraces)")
		} else {
			je.Unwinder = UnwinderNone
		}
		return
	}
	env, file := in.preloads(ctx)
	if in.envErr != nil {
		je.Unwinder = string(Unknown)
		in.unknown("jemalloc.unwinder", "imports _Unwind_Backtrace, and LD_PRELOAD is unreadable: %v", in.envErr)
		return
	}
	// Symbol lookup order: the executable, LD_PRELOAD, /etc/ld.so.preload,
	// then DT_NEEDED breadth-first (where libgcc_s arrives).
	for _, p := range append(append([]string{}, env...), file...) {
		base := filepath.Base(p)
		if !strings.HasPrefix(base, "libunwind") {
			continue
		}
		l := in.findLib(func(b string) bool {
			return b == base || strings.HasPrefix(b, strings.TrimSuffix(base, filepath.Ext(base)))
		})
		if l == nil {
			continue
		}
		if ui, err := in.probe(l); err == nil && ui.Defines("_Unwind_Backtrace") {
			je.Unwinder = UnwinderLibunwind
			je.Evidence = append(je.Evidence, fmt.Sprintf("imports _Unwind_Backtrace, which binds to preloaded %s (it precedes libgcc_s in lookup order)", l.path))
			return
		}
	}
	je.Unwinder = UnwinderLibgcc
	je.Evidence = append(je.Evidence, "imports _Unwind_Backtrace from libgcc_s (no preloaded library interposes it)")
}

// jemallocConf evaluates every configuration source in jemalloc's order.
func (in *inspection) jemallocConf(ctx context.Context, lib *mappedLib, info *elfx.Info) {
	je := &in.r.Jemalloc
	prefix := je.Prefix
	var sources []ConfSource

	// 2. the malloc_conf global that wins symbol lookup.
	src := ConfSource{Name: prefix + "malloc_conf symbol"}
	owner, sym, ok := in.winningSymbol(prefix+"malloc_conf", lib, info)
	switch {
	case !ok:
		src.Error = "symbol not exported"
	case in.opts.SkipMemory:
		src.Error = "memory not read (SkipMemory)"
	default:
		addr := sym.Value
		if owner.base != 0 && addr < owner.base {
			addr += owner.base
		}
		v, err := elfx.ReadPointedString(in.p.Path(), addr, 8, maxConfLen)
		switch {
		case errors.Is(err, elfx.ErrNullPointer):
			src.Error = ""
		case err != nil:
			src.Error = fmt.Sprintf("read %s in %s: %v", sym.Name, owner.path, err)
		default:
			src.Value, src.Set = v, true
		}
		src.Name += " in " + owner.path
	}
	if src.Error == "symbol not exported" {
		src.Error = ""
	}
	sources = append(sources, src)

	// 3. the /etc/malloc.conf symlink, in the target's root.
	link := "/etc/" + prefix + "malloc.conf"
	src = ConfSource{Name: link}
	if target, err := safefile.ReadlinkIn(ctx, in.r.Process.Root, link); err == nil {
		src.Value, src.Set = target, true
	} else if !errors.Is(err, os.ErrNotExist) && !isNotLink(err) {
		src.Error = err.Error()
	}
	sources = append(sources, src)

	// 4. the environment.
	envName := strings.ToUpper(prefix) + "MALLOC_CONF"
	src = ConfSource{Name: envName}
	if in.envErr != nil {
		src.Error = in.envErr.Error()
	} else if v, ok := in.env.Lookup(envName); ok {
		src.Value, src.Set = v, true
	}
	sources = append(sources, src)

	je.Prof = evalProfConf(sources, je.ProfBuilt)
	if je.Prof.State == ProfUnknown {
		in.unknown("jemalloc.prof.state", "%s", je.Prof.Reason)
	}
	prefixOpt := "jeprof"
	if p := je.Prof.Options["prof_prefix"]; p != "" {
		prefixOpt = p
	}
	je.Dumps = in.heapDumps(ctx, prefixOpt, 5)
}

func isNotLink(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "invalid argument")
}

// winningSymbol finds which loaded object's definition of name the dynamic
// linker binds to: the executable's, else the library's own.
func (in *inspection) winningSymbol(name string, lib *mappedLib, info *elfx.Info) (*mappedLib, elfx.Symbol, bool) {
	if in.exe != nil && in.exe != lib {
		if ei, err := in.probe(in.exe); err == nil {
			if s, ok := ei.Symbol(name); ok {
				return in.exe, s, true
			}
		}
	}
	s, ok := info.Symbol(name)
	return lib, s, ok
}

// evalProfConf merges the sources' options, later overriding earlier. A
// source that could not be read makes every option it might have set
// unknown until a later readable source sets it.
func evalProfConf(sources []ConfSource, built Tristate) ProfConf {
	pc := ProfConf{Sources: sources, Options: map[string]string{}}
	uncertain := map[string]string{}
	for _, s := range sources {
		if s.Error != "" {
			for _, k := range []string{"prof", "prof_active"} {
				uncertain[k] = s.Name + ": " + s.Error
			}
			continue
		}
		if !s.Set {
			continue
		}
		for _, kv := range strings.Split(s.Value, ",") {
			k, v, ok := strings.Cut(kv, ":")
			if !ok || !(strings.HasPrefix(k, "prof") || strings.HasPrefix(k, "lg_prof")) {
				continue
			}
			pc.Options[k] = v
			delete(uncertain, k)
		}
	}
	if len(pc.Options) == 0 {
		pc.Options = nil
	}
	prof, active := pc.Options["prof"], pc.Options["prof_active"]
	switch {
	case built == No:
		pc.State = ProfOff
		pc.Reason = "built without profiling support"
		if prof == "true" {
			pc.Reason += " (prof:true is ignored)"
		}
	case prof != "true" && uncertain["prof"] != "":
		pc.State, pc.Reason = ProfUnknown, "prof may be set by a source that could not be read: "+uncertain["prof"]
	case prof != "true":
		pc.State, pc.Reason = ProfOff, "no source sets prof:true"
	case active == "false":
		pc.State = ProfIdle
		pc.Reason = "prof:true with prof_active:false; the application can still turn it on with mallctl(\"prof.active\"), which is not visible from outside"
	case uncertain["prof_active"] != "":
		pc.State, pc.Reason = ProfActive, "prof:true; prof_active could be set to false by a source that could not be read: "+uncertain["prof_active"]
	default:
		pc.State, pc.Reason = ProfActive, "prof:true and prof_active is not false"
	}
	return pc
}
