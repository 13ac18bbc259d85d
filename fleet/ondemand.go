package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/internal/printable"
	"github.com/safeattach/safeattach/kube"
	"github.com/safeattach/safeattach/profiling"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/target"
)

// The on-demand API's resource, as RBAC names it: a caller may profile a
// pod when it may create profiles.safeattach.io with the pod's name in
// the pod's namespace. No CustomResourceDefinition is needed: the API
// server evaluates a SubjectAccessReview for any group and resource.
const (
	OnDemandGroup    = "safeattach.io"
	OnDemandResource = "profiles"
	OnDemandVerb     = "create"
	// OnDemandReadVerb is what status and inspect need: they read what
	// runs, and start nothing.
	OnDemandReadVerb = "get"
)

// On-demand bounds, unless OnDemandConfig says otherwise.
const (
	DefaultOnDemandDuration    = 10 * time.Second
	DefaultOnDemandMaxDuration = 5 * time.Minute
	DefaultOnDemandMaxOutput   = 64 << 20
	DefaultOnDemandConcurrent  = 2
	DefaultOnDemandPerUser     = 1
)

// OnDemandConfig configures the on-demand profiling API. Authenticator
// and Authorizer are required: DelegatingAuth makes the ones the kubelet
// uses (TokenReview and SubjectAccessReview by the API server).
type OnDemandConfig struct {
	Authenticator authenticator.Request
	Authorizer    authorizer.Authorizer
	// MaxDuration bounds a request's duration; MaxOutput what one
	// profile may be read back as.
	MaxDuration time.Duration
	MaxOutput   int64
	// MaxConcurrent caps the on-demand profiles running on this node at
	// once, MaxPerUser those of one user, MaxPerNamespace those of one
	// namespace (default: half the node's, at least 1, so that one
	// team cannot hold every slot of a node); a request past any is
	// answered 429.
	MaxConcurrent, MaxPerUser, MaxPerNamespace int
	// Events, if set, records an Event on each pod profiled on demand:
	// who profiled it, how, and how it ended (reason Profiled, or
	// ProfileFailed as a warning).
	Events kubernetes.Interface
	// Converter is the JFR converter (cmd/safeattach-pprof) a profile by
	// the Flight Recorder runs for any format but jfr; default: beside
	// this program, else on PATH.
	Converter string
}

// DelegatingAuth is the authenticator and authorizer that ask the API
// server: a bearer token by TokenReview, a client certificate against
// the client CA the API server publishes for delegated authentication
// (kube-system/extension-apiserver-authentication, client-ca-file:
// followed as it changes until ctx ends), a permission by
// SubjectAccessReview, each answer cached for cacheTTL (a denial for
// less). No identity is taken from a request's headers: the front
// proxy's X-Remote-User is not accepted. Without that ConfigMap (or the
// right to read it) client certificates are not accepted either, tokens
// still are, and log (nil: none) is told why.
func DelegatingAuth(ctx context.Context, client kubernetes.Interface, cacheTTL time.Duration, log *slog.Logger) (authenticator.Request, authorizer.Authorizer, error) {
	backoff := &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
	cfg := authenticatorfactory.DelegatingAuthenticatorConfig{
		TokenAccessReviewClient: client.AuthenticationV1(), TokenAccessReviewTimeout: 10 * time.Second,
		WebhookRetryBackoff: backoff, CacheTTL: cacheTTL,
	}
	if ca, err := clientCA(ctx, client); err == nil {
		cfg.ClientCertificateCAContentProvider = ca
	} else if log != nil {
		log.Warn("on-demand API: client certificates are not accepted (bearer tokens are): the cluster's client CA cannot be read",
			"configmap", "kube-system/extension-apiserver-authentication", "err", logText(err))
	}
	authn, _, err := cfg.New()
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: token review: %w", err)
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: client.AuthorizationV1(), AllowCacheTTL: cacheTTL, DenyCacheTTL: min(cacheTTL, 10*time.Second),
		WebhookRetryBackoff: backoff,
	}.New()
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: subject access review: %w", err)
	}
	return authn, authz, nil
}

// clientCA follows the client CA the API server publishes for delegated
// authentication; an error when it cannot be read now (none published,
// or no right to read it) or in clientCAWait.
func clientCA(ctx context.Context, client kubernetes.Interface) (dynamiccertificates.CAContentProvider, error) {
	const ns, name, key = metav1.NamespaceSystem, "extension-apiserver-authentication", "client-ca-file"
	get, cancel := context.WithTimeout(ctx, clientCAWait)
	defer cancel()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(get, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if cm.Data[key] == "" {
		return nil, errors.New("no client CA published")
	}
	ca, err := dynamiccertificates.NewDynamicCAFromConfigMapController("client-ca", ns, name, key, client)
	if err != nil {
		return nil, err
	}
	// Its informer fills it once running (RunOnce reads the informer's
	// cache, empty until then); stopped again if it does not in time.
	run, stop := context.WithCancel(ctx)
	go ca.Run(run, 1)
	for len(ca.CurrentCABundleContent()) == 0 {
		select {
		case <-get.Done():
			stop()
			return nil, fmt.Errorf("the client CA: not loaded in %v", clientCAWait)
		case <-time.After(50 * time.Millisecond):
		}
	}
	context.AfterFunc(run, stop) // it runs as long as ctx does
	return ca, nil
}

// clientCAWait bounds the first read of the client CA.
const clientCAWait = 10 * time.Second

// onDemand serves the on-demand API; busy JVMs are the Daemon's.
type onDemand struct {
	d   *Daemon
	cfg OnDemandConfig
	// slots bounds the node's profiles; perUser counts each user's.
	slots        chan struct{}
	perUser      map[string]int // guarded by d.mu
	perNamespace map[string]int // guarded by d.mu
	// started are the profiles started and not yet stopped, by
	// namespace/pod/container; guarded by d.mu.
	started map[string]*startedProfile
	// inspecting are the users inspecting a JVM now; guarded by d.mu.
	inspecting map[string]bool
	// users bounds each user's requests, events each namespace's
	// Events.
	users, events *keyedLimits
	// failures bounds each source address's failed authentications.
	failures *keyedLimits
	// discarded are the started profiles discarded at their deadline,
	// oldest first; guarded by d.mu.
	discarded []discarded
	// stopping is set, under d.mu, when the node agent stops: no profile
	// is started or taken out of started after it but by stopStarted.
	stopping bool
	// discards are the discards running (a deadline, a sweep, a JVM
	// replaced), which stopStarted waits for; each is added under d.mu
	// while not stopping.
	discards sync.WaitGroup
}

// OnDemandHandler serves the on-demand profiling API, under
// /apis/safeattach.io/v1/namespaces/{namespace}/pods/{pod}/:
//
//	POST profile?duration=10s&format=collapsed&event=cpu&container=NAME&fallback=jfr
//	POST check?event=cpu&container=NAME&fallback=jfr
//	POST start?duration=5m&format=flamegraph&event=cpu&container=NAME&fallback=jfr
//	POST stop?container=NAME
//	GET  status?container=NAME
//	GET  inspect?container=NAME
//
// profile profiles for duration and streams the profile as it is
// written. start starts one that runs until stop (any caller who may
// start one may stop it) or until duration, when the agent stops it
// and keeps nothing; it holds its slot of the caps until then, and
// stop streams the profile. check is profile's dry run: the pod's JVM
// judged as a profile would judge it, nothing sent to it, the answer
// the library's JSON result with the verdict (exit_code 0 allowed, 2
// refused). status says what runs on demand in the pod; inspect is what
// the inspection of the pod's JVM found (its command line and the
// node's paths left out). Each profile loads the first of the node's
// async-profiler builds the rules allow for the JVM; where they allow
// none and fallback (the request's, else the pod's annotation, else the
// node's) is jfr, the JVM's own Flight Recorder profiles instead, and
// the answer says so (X-Safeattach-Engine, X-Safeattach-Fallback-From).
//
// Every request is authenticated first (a bearer token, by the
// Authenticator: 401 without a valid one), then authorised by the
// API server (create on profiles.safeattach.io named as the pod in its
// namespace for profile, check, start and stop; get for status and
// inspect: 403), and only then is the pod looked up among this node's
// pods and its container's JVM touched, within the caps (429) and one
// on-demand profile per JVM (409). An error before any byte of a
// profile is the library's JSON result. The client going away cancels
// a profile (not a started one: that is what start is for). Each
// request is logged and counted
// (safeattach_ondemand_requests_total{result}).
func (d *Daemon) OnDemandHandler(cfg OnDemandConfig) (http.Handler, error) {
	if cfg.Authenticator == nil || cfg.Authorizer == nil {
		return nil, errors.New("fleet: on-demand API without an authenticator and an authorizer")
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = DefaultOnDemandMaxDuration
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = DefaultOnDemandMaxOutput
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultOnDemandConcurrent
	}
	if cfg.MaxPerUser <= 0 {
		cfg.MaxPerUser = DefaultOnDemandPerUser
	}
	if cfg.MaxPerNamespace <= 0 {
		cfg.MaxPerNamespace = max(1, cfg.MaxConcurrent/2)
	}
	o := &onDemand{d: d, cfg: cfg, slots: make(chan struct{}, cfg.MaxConcurrent), perUser: map[string]int{}, perNamespace: map[string]int{},
		users: newKeyedLimits(userRequestEvery, userRequestBurst), events: newKeyedLimits(namespaceEventEvery, namespaceEventBurst),
		failures: newKeyedLimits(sourceFailureEvery, sourceFailureBurst),
		started:  map[string]*startedProfile{}, inspecting: map[string]bool{}}
	d.mu.Lock()
	d.stopOnDemand = append(d.stopOnDemand, o.stopStarted)
	d.mu.Unlock()
	const pods = "/apis/safeattach.io/v1/namespaces/{namespace}/pods/{pod}/"
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pods+"profile", o.profile)
	mux.HandleFunc("POST "+pods+"check", o.check)
	mux.HandleFunc("POST "+pods+"start", o.start)
	mux.HandleFunc("POST "+pods+"stop", o.stop)
	mux.HandleFunc("GET "+pods+"status", o.status)
	mux.HandleFunc("GET "+pods+"inspect", o.inspect)
	return o.authenticated(mux), nil
}

// answer is one request's log record and metric label.
type answer struct {
	user                      user.Info
	namespace, pod, container string
	format, event             string
	duration                  time.Duration
	// fallback is the engine that profiles where async-profiler is
	// refused: the request's, else the pod's annotation's, else the
	// daemon's; engine is the one that did.
	fallbackAsked string
	fallback      profiling.Engine
	engine        profiling.Engine
	// agentOptions are what async-profiler is started with, as the
	// rules judge them (readTarget).
	agentOptions string
	action       string // profile, check, start, stop, status, inspect
	status       int
	result       string
	bytes        int64
	err          error
	podUID       string // once the pod is found
}

type userKey struct{}

// authenticated answers 401 to every request without a valid token,
// whatever its path; the others reach next with their user.
func (o *onDemand) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A caller refused is not kept connected: its connection's slot
		// is another caller's.
		src := remoteHost(r.RemoteAddr)
		// Each review in flight holds one of its source's failures,
		// given back when the caller is known.
		giveBack, ok := o.failures.reserve(src)
		if !ok {
			// Made-up tokens each cost a TokenReview: a source that
			// keeps failing is refused before its token is reviewed,
			// and not logged each time.
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1")
			o.d.cfg.Metrics.onDemand("unauthenticated")
			writeJSON(w, http.StatusTooManyRequests, refusal(&answer{status: http.StatusTooManyRequests,
				err: fmt.Errorf("too many failed (or pending) authentications from %s: slow down", src)}, time.Now()))
			return
		}
		resp, ok, err := o.cfg.Authenticator.AuthenticateRequest(r)
		if err != nil || !ok {
			a := &answer{status: http.StatusUnauthorized, result: "unauthenticated",
				err: errors.New("unauthenticated: a bearer token the API server accepts, or a client certificate of the cluster's client CA, is required")}
			if err != nil {
				// Why the token was not accepted is for the log, not
				// for a caller the API server does not know.
				a.err = fmt.Errorf("%w (%v)", a.err, err)
			}
			o.log(r, a, time.Now(), 0)
			w.Header().Set("Connection", "close")
			writeJSON(w, a.status, refusal(a, time.Now()))
			return
		}
		giveBack()
		if !o.users.allow(resp.User.GetName()) {
			a := &answer{user: resp.User, status: http.StatusTooManyRequests, result: "too-many",
				err: fmt.Errorf("user %q sends more than %d requests in a row, one each %v after: slow down", resp.User.GetName(), userRequestBurst, userRequestEvery)}
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Connection", "close")
			o.log(r, a, time.Now(), 0)
			writeJSON(w, a.status, refusal(a, time.Now()))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, resp.User)))
	})
}

// Request and Event rates: a user's requests (each costs the API server
// a review or two, and the node an inspection), a namespace's Events
// (the Events client's rate is the node agent's, shared by every
// namespace: one team's flood must not drop another's audit).
const (
	userRequestEvery    = 200 * time.Millisecond
	userRequestBurst    = 20
	sourceFailureEvery  = 200 * time.Millisecond
	sourceFailureBurst  = 20
	namespaceEventEvery = time.Second
	namespaceEventBurst = 10
)

func (o *onDemand) profile(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	a, ok := o.authorize(w, r, began, "profile", OnDemandVerb)
	if !ok {
		return
	}
	if err := o.options(r.URL.Query(), a, DefaultOnDemandDuration); err != nil {
		a.status, a.result, a.err = http.StatusBadRequest, "bad-request", err
		o.fail(w, r, a, began)
		return
	}
	pid, _, done, ok := o.claim(w, r, a, began, true)
	if !ok {
		return
	}
	defer done()
	defer o.recordEvent(a, "") // also when the stream is cut
	o.run(w, r, a, pid, began)
}

// claim takes the caller's slots of the caps and the pod's JVM, or
// answers why not (429, with Retry-After for a profile; 404; 409 when
// the JVM is busy). done gives both back.
func (o *onDemand) claim(w http.ResponseWriter, r *http.Request, a *answer, began time.Time, retryAfter bool) (pid int, id jvmID, done func(), ok bool) {
	o.sweep(r.Context())
	release, err := o.acquire(a.user.GetName(), a.namespace)
	if err != nil {
		if retryAfter {
			w.Header().Set("Retry-After", strconv.Itoa(int(min(a.duration, o.cfg.MaxDuration).Seconds())+1))
		}
		a.status, a.result, a.err = http.StatusTooManyRequests, "too-many", err
		o.fail(w, r, a, began)
		return 0, jvmID{}, nil, false
	}
	jvm, id, status, err := o.jvmOf(r.Context(), a)
	if err != nil {
		release()
		a.status, a.result, a.err = status, "not-found", err
		if status == http.StatusConflict {
			a.result = "busy"
		}
		o.fail(w, r, a, began)
		return 0, jvmID{}, nil, false
	}
	return jvm.PID, id, func() { o.d.jvmDone(id); release() }, true
}

// authorize answers 403 unless the caller may verb profiles named as
// the pod in its namespace; ok, it returns the request's answer record.
func (o *onDemand) authorize(w http.ResponseWriter, r *http.Request, began time.Time, action, verb string) (*answer, bool) {
	u := r.Context().Value(userKey{}).(user.Info)
	a := &answer{user: u, namespace: r.PathValue("namespace"), pod: r.PathValue("pod"), action: action}
	decision, reason, err := o.cfg.Authorizer.Authorize(r.Context(), authorizer.AttributesRecord{
		User: u, Verb: verb, Namespace: a.namespace, APIGroup: OnDemandGroup, APIVersion: "v1",
		Resource: OnDemandResource, Name: a.pod, ResourceRequest: true, Path: r.URL.Path,
	})
	if decision == authorizer.DecisionAllow {
		return a, true
	}
	msg := fmt.Sprintf("user %q cannot %s %s.%s %q in namespace %q", u.GetName(), verb, OnDemandResource, OnDemandGroup, a.pod, a.namespace)
	if reason != "" {
		msg += ": " + reason
	}
	a.status, a.result, a.err = http.StatusForbidden, "forbidden", errors.New(msg)
	if err != nil {
		a.status, a.result, a.err = http.StatusInternalServerError, "error", fmt.Errorf("authorization failed: %w", err)
	}
	o.fail(w, r, a, began)
	return nil, false
}

// check judges the pod's JVM as a profile would, sending it nothing.
func (o *onDemand) check(w http.ResponseWriter, r *http.Request) {
	began := time.Now()
	a, ok := o.authorize(w, r, began, "check", OnDemandVerb)
	if !ok {
		return
	}
	if err := o.readTarget(r.URL.Query(), a); err != nil {
		a.status, a.result, a.err = http.StatusBadRequest, "bad-request", err
		o.fail(w, r, a, began)
		return
	}
	// A judgement inspects the node's processes: within the same caps
	// as a profile, so that checks in a loop cost what profiles would.
	pid, _, done, ok := o.claim(w, r, a, began, false)
	if !ok {
		return
	}
	defer done()
	p, err := o.planFor(r.Context(), pid, a)
	out := profiling.NewJSONResult("check", pid, began, nil, err)
	if err != nil {
		a.err = err
		a.status, a.result = statusOf(err)
		o.log(r, a, began, pid)
		writeJSON(w, a.status, out)
		return
	}
	// The verdict only (its evidence names the node's agent build, as
	// the chart documents it): not the agent's description nor the
	// alternatives, which name the node's other builds and processes.
	out.Verdict = &p.verdict
	a.status, a.result, a.engine = http.StatusOK, "allowed", p.engine
	if !p.allowed() {
		out.Outcome, a.result = attach.OutcomeRefused, "refused"
		a.err = fmt.Errorf("refused by %s", strings.Join(p.verdict.Causes(), ", "))
	} else if p.engine != profiling.AsyncProfiler {
		out.Profile = &profiling.JSONProfile{Engine: p.engine, FallbackFrom: p.fallbackFrom, Event: a.event}
	}
	out.ExitCode = out.Outcome.ExitCode()
	o.log(r, a, began, pid)
	writeJSON(w, a.status, out)
}

// agentOptions are the options a profile gives async-profiler, checked
// as a profile's are (one event, no comma smuggling another option in).
func (o *onDemand) agentOptions(a *answer) (string, error) {
	opts, err := asprof.Options{Event: a.event}.Profiling()
	if err != nil {
		return "", fmt.Errorf("event %q: %w", a.event, err)
	}
	switch a.fallbackAsked {
	case "", "none", string(profiling.FlightRecorder):
	default:
		return "", fmt.Errorf("fallback %q: want jfr or none", a.fallbackAsked)
	}
	return "start," + opts, nil
}

// readTarget reads what every request that may profile names — the
// container, the event (default cpu), the fallback — and turns the
// event into the agent's options, checking both.
func (o *onDemand) readTarget(q url.Values, a *answer) error {
	a.event, a.container, a.fallbackAsked = q.Get("event"), q.Get("container"), q.Get("fallback")
	if a.event == "" {
		a.event = "cpu"
	}
	var err error
	a.agentOptions, err = o.agentOptions(a)
	return err
}

// options checks a profile's or a start's query against the bounds,
// filling in defaults.
func (o *onDemand) options(q url.Values, a *answer, duration time.Duration) error {
	a.format = q.Get("format")
	a.duration = duration
	if d := q.Get("duration"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil || v < time.Second || v > o.cfg.MaxDuration {
			return fmt.Errorf("duration %q: want 1s to %v", d, o.cfg.MaxDuration)
		}
		a.duration = v
	}
	if a.format == "" {
		a.format = "collapsed"
	}
	if !slices.Contains([]string{"collapsed", "pprof", "jfr", "flamegraph"}, a.format) {
		return fmt.Errorf("format %q: want collapsed, pprof, jfr or flamegraph", a.format)
	}
	return o.readTarget(q, a)
}

// acquire takes a slot of the node's, one of the user's and one of the
// namespace's, or says which cap is reached.
func (o *onDemand) acquire(name, namespace string) (func(), error) {
	o.d.mu.Lock()
	defer o.d.mu.Unlock()
	if o.perUser[name] >= o.cfg.MaxPerUser {
		return nil, fmt.Errorf("user %q already runs %d on-demand profiles on this node (the cap per user)", name, o.cfg.MaxPerUser)
	}
	if o.perNamespace[namespace] >= o.cfg.MaxPerNamespace {
		return nil, fmt.Errorf("namespace %q already runs %d on-demand profiles on this node (the cap per namespace)", namespace, o.cfg.MaxPerNamespace)
	}
	select {
	case o.slots <- struct{}{}:
	default:
		return nil, fmt.Errorf("this node already runs %d on-demand profiles (the cap per node)", o.cfg.MaxConcurrent)
	}
	o.perUser[name]++
	o.perNamespace[namespace]++
	o.d.cfg.Metrics.onDemandRunning(1)
	return func() {
		o.d.mu.Lock()
		defer o.d.mu.Unlock()
		if o.perUser[name]--; o.perUser[name] == 0 {
			delete(o.perUser, name)
		}
		if o.perNamespace[namespace]--; o.perNamespace[namespace] == 0 {
			delete(o.perNamespace, namespace)
		}
		<-o.slots
		o.d.cfg.Metrics.onDemandRunning(-1)
	}, nil
}

// jvmOf finds the pod's JVM (findJVM) and marks it busy (one on-demand
// profile per JVM; the profiler's owner record refuses any other
// tool's): 409 when it is.
func (o *onDemand) jvmOf(ctx context.Context, a *answer) (target.Candidate, jvmID, int, error) {
	jvm, id, status, err := o.findJVM(ctx, a)
	if err != nil {
		return jvm, id, status, err
	}
	o.d.mu.Lock()
	defer o.d.mu.Unlock()
	if by, busy := o.d.onDemand[id]; busy {
		return target.Candidate{}, jvmID{}, http.StatusConflict, fmt.Errorf("the JVM of container %s of pod %s/%s is being profiled on demand by %q", a.container, a.namespace, a.pod, by)
	}
	o.d.onDemand[id] = a.user.GetName()
	return jvm, id, 0, nil
}

// findJVM finds the pod among this node's, its container, and the JVM
// the container runs. The status says why not: 404, or 409 for a pod
// not running.
func (o *onDemand) findJVM(ctx context.Context, a *answer) (target.Candidate, jvmID, int, error) {
	pods, err := o.d.cfg.Pods.Pods(ctx)
	if err != nil {
		return target.Candidate{}, jvmID{}, http.StatusServiceUnavailable, fmt.Errorf("this node's pods are not known yet: %w", err)
	}
	var pod *kube.Pod
	for i, p := range pods {
		if p.Namespace == a.namespace && p.Name == a.pod && (o.d.cfg.Node == "" || p.Node == o.d.cfg.Node) {
			pod = &pods[i]
		}
	}
	if pod == nil {
		return target.Candidate{}, jvmID{}, http.StatusNotFound, fmt.Errorf("pod %s/%s is not on this node", a.namespace, a.pod)
	}
	if pod.Phase != "Running" {
		return target.Candidate{}, jvmID{}, http.StatusConflict, fmt.Errorf("pod %s/%s is %s, not Running", a.namespace, a.pod, pod.Phase)
	}
	var c *kube.Container
	var names []string
	for i, pc := range pod.Containers {
		if pc.Name == a.container || (a.container == "" && !pc.Ephemeral) {
			c = &pod.Containers[i]
			names = append(names, pc.Name)
		}
	}
	switch {
	case c == nil:
		return target.Candidate{}, jvmID{}, http.StatusNotFound, fmt.Errorf("pod %s/%s has no running container %q", a.namespace, a.pod, a.container)
	case len(names) > 1:
		return target.Candidate{}, jvmID{}, http.StatusBadRequest, fmt.Errorf("pod %s/%s runs %d containers %v: name one (kubectl safeattach -c NAME, or container=NAME)", a.namespace, a.pod, len(names), names)
	}
	a.container, a.podUID = c.Name, pod.UID
	switch a.fallbackAsked {
	case "none":
		a.fallback = ""
	case string(profiling.FlightRecorder):
		a.fallback = profiling.FlightRecorder
	default:
		a.fallback, _ = fallbackAnnotation(pod.Annotations, o.d.cfg.Fallback)
	}
	procs, err := target.All(target.Options{ProcRoot: o.d.cfg.ProcRoot})
	if err != nil {
		return target.Candidate{}, jvmID{}, http.StatusInternalServerError, fmt.Errorf("list processes: %w", err)
	}
	jvm, id, err := o.d.resolve(procs, pod.UID, c.ID)
	if err != nil {
		return target.Candidate{}, jvmID{}, http.StatusNotFound, fmt.Errorf("no JVM in container %s of pod %s/%s: %w", c.Name, a.namespace, a.pod, err)
	}
	return jvm, id, 0, nil
}

// jvmDone frees a JVM for another on-demand profile.
func (d *Daemon) jvmDone(id jvmID) {
	d.mu.Lock()
	delete(d.onDemand, id)
	d.mu.Unlock()
}

// run profiles the JVM and streams the profile to w.
func (o *onDemand) run(w http.ResponseWriter, r *http.Request, a *answer, pid int, began time.Time) {
	out := &lazyWriter{w: w, contentType: contentTypes[a.format]}
	// The attach timeout bounds each command; the profile's own
	// deadline covers its duration too.
	opts := o.d.optionsFor(a.namespace)
	opts.Timeout += a.duration
	ctx, cancel := context.WithTimeout(r.Context(), opts.Timeout+time.Minute)
	defer cancel()
	req := profiling.ProfileRequest{
		SessionRequest: o.sessionRequest(a, opts),
		Duration:       a.duration, Writer: out,
	}
	res, err := o.profileAsPlanned(ctx, pid, req, a, out)
	a.bytes = out.n
	if err == nil && r.Context().Err() != nil {
		err = r.Context().Err() // the client left: what was written went nowhere
	}
	if err == nil {
		a.status, a.result = http.StatusOK, "ok"
		if !out.started {
			out.start() // an empty profile is still a profile
		}
		o.log(r, a, began, pid)
		return
	}
	a.err = err
	a.status, a.result = statusOf(err)
	if out.started {
		// Too late for a status: the client sees the stream cut.
		o.log(r, a, began, pid)
		panic(http.ErrAbortHandler)
	}
	var result *attach.Result
	if res != nil {
		result = &res.Result
	}
	o.log(r, a, began, pid)
	writeJSON(w, a.status, profiling.NewJSONResult("profile", pid, began, result, err))
}

// sessionRequest is what a profile or a start asks of the profiling
// layer, for the caller a.
func (o *onDemand) sessionRequest(a *answer, opts attach.Options) profiling.SessionRequest {
	return profiling.SessionRequest{
		Profiler: asprof.Options{Event: a.event}, Format: a.format, EventFallback: true, Converter: o.cfg.Converter,
		MaxOutput: o.cfg.MaxOutput, Owner: o.d.owner() + " on demand for " + a.user.GetName(), Options: opts,
	}
}

// profileAsPlanned profiles with the engine planFor chooses. A refusal
// of everything is the profiling layer's own (judged again as it loads:
// what it says is what it found then).
func (o *onDemand) profileAsPlanned(ctx context.Context, pid int, req profiling.ProfileRequest, a *answer, out *lazyWriter) (*profiling.ProfileResult, error) {
	p, err := o.planFor(ctx, pid, a)
	if err != nil {
		return nil, err
	}
	p.apply(&req.SessionRequest, a.fallback)
	if p.engine == profiling.FlightRecorder {
		out.fallback(p.engine, p.fallbackFrom)
	}
	a.engine = p.engine
	res, err := profiling.Profile(ctx, pid, req)
	if res != nil && p.engine == profiling.FlightRecorder {
		res.FallbackFrom = p.fallbackFrom
	}
	return res, err
}

// statusOf is a failed profile's HTTP status and result label.
func statusOf(err error) (int, string) {
	var busy *profiling.BusyError
	if errors.As(err, &busy) {
		return http.StatusConflict, "busy"
	}
	switch attach.OutcomeOf(err) {
	case attach.OutcomeRefused:
		return http.StatusUnprocessableEntity, "refused"
	case attach.OutcomeTimedOut:
		return http.StatusGatewayTimeout, "timed-out"
	case attach.OutcomeInterrupted:
		return 499, "cancelled"
	case attach.OutcomeInvalid:
		return http.StatusBadRequest, "bad-request"
	}
	return http.StatusInternalServerError, "failed"
}

var contentTypes = map[string]string{
	"collapsed":  "text/plain; charset=utf-8",
	"flamegraph": "text/html; charset=utf-8",
	"pprof":      "application/octet-stream",
	"jfr":        "application/octet-stream",
}

// writeWait bounds one write of a profile to its caller, streamWait all
// of them (MaxOutput's default, 64 MiB, at 220 kB/s).
const (
	writeWait  = 30 * time.Second
	streamWait = 5 * time.Minute
)

// lazyWriter sends the status and headers with the first byte, so that
// a profile that fails before it is written is answered with an error.
type lazyWriter struct {
	w           http.ResponseWriter
	contentType string
	started     bool
	n           int64
	first       time.Time // the first write's
}

// fallback says, in the headers the profile is sent with, that engine
// made it because the rules refused async-profiler.
func (l *lazyWriter) fallback(engine profiling.Engine, rules []string) {
	l.w.Header().Set("X-Safeattach-Engine", string(engine))
	l.w.Header().Set("X-Safeattach-Fallback-From", strings.Join(rules, ","))
}

func (l *lazyWriter) start() {
	l.started = true
	l.w.Header().Set("Content-Type", l.contentType)
	l.w.Header().Set("X-Content-Type-Options", "nosniff")
	l.w.WriteHeader(http.StatusOK)
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.start()
	}
	// A client that stops reading, or reads slowly, would hold its slot
	// and the JVM past every bound: each write has writeWait, and the
	// whole stream streamWait from its first byte; the deadline is lifted
	// after each write, so that work after the last one cannot cut it.
	// (Where the server cannot set one, the error says so: ignored.)
	now := time.Now()
	if l.first.IsZero() {
		l.first = now
	}
	rc := http.NewResponseController(l.w)
	deadline := now.Add(writeWait)
	if end := l.first.Add(streamWait); end.Before(deadline) {
		deadline = end
	}
	rc.SetWriteDeadline(deadline)
	n, err := l.w.Write(p)
	if err == nil {
		err = rc.Flush()
	}
	rc.SetWriteDeadline(time.Time{})
	l.n += int64(n)
	return n, err
}

// fail answers a request refused before anything was sent to a JVM with
// the library's JSON result.
func (o *onDemand) fail(w http.ResponseWriter, r *http.Request, a *answer, began time.Time) {
	o.log(r, a, began, 0)
	writeJSON(w, a.status, refusal(a, began))
}

// refusal is the JSON result of a request answered before anything was
// sent to a JVM; a 401 says no more than that.
func refusal(a *answer, began time.Time) *profiling.JSONResult {
	err := a.err
	if a.status == http.StatusUnauthorized {
		err = errors.New("unauthenticated: a bearer token the API server accepts, or a client certificate of the cluster's client CA, is required")
	}
	command := a.action
	if command == "" {
		command = "profile" // not routed to an action (a 401)
	}
	res := profiling.NewJSONResult(command, 0, began, nil, err)
	switch a.status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests, http.StatusConflict:
		res.Outcome = attach.OutcomeRefused
	case http.StatusBadRequest, http.StatusNotFound:
		res.Outcome = attach.OutcomeInvalid
	}
	res.ExitCode = res.Outcome.ExitCode()
	if a.status == http.StatusUnauthorized || a.status == http.StatusForbidden {
		// Refused for who asked, not by the rules (2): kubectl
		// safeattach exits 1, as kubectl does for a 401 or 403.
		res.ExitCode = 1
	}
	return res
}

// log counts a request by result and logs who asked what, and the
// verdict.
func (o *onDemand) log(r *http.Request, a *answer, began time.Time, pid int) {
	o.d.cfg.Metrics.onDemand(a.result)
	attrs := []any{"result", a.result, "status", a.status, "namespace", a.namespace, "pod", a.pod, "action", a.action,
		"path", printable.Line(truncate(r.URL.Path, 512)), "remote", remoteHost(r.RemoteAddr), "took_ms", time.Since(began).Milliseconds()}
	if a.user != nil {
		attrs = append(attrs, "user", a.user.GetName(), "groups", a.user.GetGroups())
	}
	if a.format != "" {
		attrs = append(attrs, "container", a.container, "format", a.format, "event", a.event, "duration", a.duration.String())
	}
	if a.engine != "" {
		attrs = append(attrs, "engine", a.engine)
	}
	if pid != 0 {
		attrs = append(attrs, "pid", pid, "bytes", a.bytes)
	}
	if a.err != nil {
		attrs = append(attrs, "err", logText(a.err))
	}
	level := slog.LevelInfo
	if a.status >= 500 {
		level = slog.LevelWarn
	}
	o.d.cfg.Logger.Log(context.Background(), level, "on-demand profile", attrs...)
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// An Event's action and its note's verb, by request.
var (
	eventAction = map[string]string{"profile": "Profile", "start": "Start", "stop": "Stop", "expire": "Stop"}
	eventVerb   = map[string]string{"profile": "profiled", "start": "started", "stop": "profiled", "expire": "started"}
)

// recordEvent records on the pod that a caller profiled its JVM (or
// started, or stopped a profile: extra says more), in the background
// (the API server's answer does not hold the caller up).
func (o *onDemand) recordEvent(a *answer, extra string) {
	if o.cfg.Events == nil {
		return
	}
	reason, kind := "Profiled", corev1.EventTypeNormal
	switch a.result {
	case "ok":
	case "started":
		reason = "ProfileStarted"
	case "expired":
		reason, kind = "ProfileExpired", corev1.EventTypeWarning
	default:
		reason, kind = "ProfileFailed", corev1.EventTypeWarning
	}
	by := a.user.GetName()
	if extra != "" {
		by += " (" + extra + ")"
	}
	note := fmt.Sprintf("%s on demand by %s: container %s, %v, event %s, format %s: %s, %d bytes",
		eventVerb[a.action], by, a.container, a.duration.Round(time.Millisecond), a.event, a.format, a.result, a.bytes)
	if a.engine == profiling.FlightRecorder {
		note += ", by the Flight Recorder"
	}
	if a.err != nil {
		note += ": " + logText(a.err)
	}
	if len(note) > 1000 { // the API server's limit is 1 kB
		note = note[:1000]
	}
	ev := &eventsv1.Event{
		// Named as a kubelet names its events: the object, a dot, the
		// time in hexadecimal.
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%.236s.%x", a.pod, time.Now().UnixNano()), Namespace: a.namespace},
		EventTime:  metav1.NowMicro(), ReportingController: "safeattach.io/safeattach-daemon",
		ReportingInstance: o.d.owner(), Action: eventAction[a.action], Reason: reason, Type: kind, Note: note,
		Regarding: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: a.namespace, Name: a.pod, UID: types.UID(a.podUID)},
	}
	if !o.events.allow(a.namespace) {
		// The request is logged all the same.
		o.d.cfg.Logger.Warn("on-demand: event not recorded: the namespace's Events come faster than one a second", "namespace", a.namespace, "pod", a.pod, "reason", reason)
		return
	}
	// The goroutine outlives the request: it reads only its own copies.
	namespace, pod := a.namespace, a.pod
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := o.cfg.Events.EventsV1().Events(namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			o.d.cfg.Logger.Warn("on-demand: event not recorded", "namespace", namespace, "pod", pod, "err", logText(err))
		}
	}()
}
