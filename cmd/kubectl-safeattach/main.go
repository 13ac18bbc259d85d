package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/safeattach/safeattach/internal/printable"
)

// version is set at build time (make plugin: -X main.version=...).
var version = "devel"

// exitError ends the command with code after its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the plugin with args; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "kubectl-safeattach:", ee.msg)
		}
		return ee.code
	}
	// Escaped: an error can quote whoever answered (a certificate's
	// names in an x509 error, a server's message).
	fmt.Fprintln(stderr, "kubectl-safeattach:", printable.Line(err.Error()))
	return 1
}

func newRootCmd(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-safeattach",
		Short: "Profile a pod's JVM through safeattach's node agent, as your Kubernetes user",
		// Help names the command as it is typed: a kubectl plugin.
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl safeattach"},
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	flags := root.PersistentFlags()
	flags.StringVar(&rules.ExplicitPath, "kubeconfig", "", "path to the kubeconfig file (as kubectl's --kubeconfig)")
	clientcmd.BindOverrideFlags(overrides, flags, clientcmd.RecommendedConfigOverrideFlags(""))
	// kubectl's flags the agent cannot honour are refused when given
	// (impersonation, basic auth) and not offered in --help.
	for _, name := range []string{"as", "as-group", "as-uid", "as-user-extra", "username", "password"} {
		if flags.Lookup(name) != nil {
			flags.MarkHidden(name)
		}
	}
	config := func() clientcmd.ClientConfig {
		return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	}
	root.AddCommand(newProfileCmd(stdout, config), newCheckCmd(stdout, config),
		newStartCmd(stdout, config), newStopCmd(stdout, config), newStatusCmd(stdout, config), newInspectCmd(stdout, config))
	return root
}

// profileOptions are the profile command's flags.
type profileOptions struct {
	container, event, format, file string
	fallback                       string
	duration                       time.Duration
	direct, agentCA                string
	agentNamespace, agentSelector  string
	insecure                       bool
	// json prints the agent's JSON answers (an error's too) on stdout,
	// as the CLI's --json does.
	json   bool
	stdout io.Writer
}

func newProfileCmd(stdout io.Writer, config func() clientcmd.ClientConfig) *cobra.Command {
	var o profileOptions
	cmd := &cobra.Command{
		Use:   "profile POD [-c CONTAINER] [-e EVENT] [-d 10s] [-o FORMAT] [-f FILE] [--direct https://NODE:PORT]",
		Short: "Profile the JVM of a pod's container for a duration",
		Long: `Profile the JVM of a pod's container through the safeattach agent of the
pod's node. The agent lets you when your user may create
profiles.safeattach.io named as the pod in its namespace (RBAC), and
answers the profile, written to -f FILE (whole or not at all) or stdout.

The agent is reached through the API server, as kubectl port-forward
reaches a pod: the plugin finds the pod's node and the agent pod there
(--agent-namespace, --agent-selector), checks that the agent's DaemonSet
made it (its controller, ServiceAccount and image: your credentials go to
it), and forwards a loopback port to its on-demand port. That needs get
on the pod, and in the agent's namespace list on pods, get on the
DaemonSet, and get and create on pods/portforward (the chart's
safeattach-portforward Role, which an admin binds to your team). The
tunnel's far end is the pod the API server named, so the agent's
self-signed certificate is accepted unless --agent-ca is given. Or the
agent is reached with --direct, its base URL (https://NODE:PORT), and
--agent-ca, the CA of its serving certificate.

Exit status: 0 with a profile; 1 unauthenticated (401), forbidden (403)
or a usage or connection error; otherwise the agent's exit_code
(2 refused, 3 failed, 4 timed out), the reason and remedy on stderr
(--json: the agent's JSON result on stdout too).`,
		Example: `  kubectl safeattach profile -n shop orders -d 30s -o flamegraph -f orders.html
  kubectl safeattach profile orders -c app -e alloc -d 1m -o jfr -f orders.jfr
  kubectl safeattach profile orders -d 10s > orders.collapsed`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), config(), args[0], stdout, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "container", "c", "", "the pod's container (needed when it runs more than one)")
	f.StringVarP(&o.event, "event", "e", "cpu", "async-profiler event: cpu, itimer, wall, alloc, lock, ...")
	f.DurationVarP(&o.duration, "duration", "d", 10*time.Second, "how long to profile (the agent bounds it)")
	f.StringVarP(&o.format, "output", "o", "collapsed", "profile format: collapsed, pprof, jfr or flamegraph")
	f.StringVarP(&o.file, "file", "f", "", "write the profile to FILE (default, or -, stdout)")
	o.fallbackFlag(cmd)
	o.connectionFlags(cmd)
	return cmd
}

// fallbackFlag is --fallback, for the commands that profile or judge.
func (o *profileOptions) fallbackFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.fallback, "fallback", "", "where the rules refuse async-profiler: jfr (the JVM's own Flight Recorder profiles instead, Java frames only) or none (default: the pod's profiles.safeattach.io/fallback annotation, else the node agent's setting)")
}

// engineName is how the plugin names an engine to its user.
func engineName(engine string) string {
	if engine == "jfr" {
		return "the JVM's Flight Recorder"
	}
	return engine
}

// checkFallback refuses a --fallback the agent would refuse.
func (o *profileOptions) checkFallback() error {
	switch o.fallback {
	case "", "jfr", "none":
		return nil
	}
	return fmt.Errorf("--fallback %q: want jfr or none", o.fallback)
}

// connectionFlags are how profile and check reach the agent.
func (o *profileOptions) connectionFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.direct, "direct", "", "the node agent's base URL, https://NODE:PORT, instead of a port-forward through the API server")
	f.StringVar(&o.agentNamespace, "agent-namespace", "safeattach", "the namespace of the node agent's pods (the chart's release namespace)")
	f.StringVar(&o.agentSelector, "agent-selector", "app.kubernetes.io/name=safeattach-daemon", "the label selector of the node agent's pods")
	f.StringVar(&o.agentCA, "agent-ca", "", "PEM file of the CA that signed the agent's serving certificate (default: the system's CAs with --direct; none through a port-forward, whose far end the API server chose)")
	f.BoolVar(&o.insecure, "insecure-skip-tls-verify-agent", false, "do not verify the agent's certificate (your token is then sent to whoever answers)")
	f.BoolVar(&o.json, "json", false, "print the agent's JSON answer on stdout (an error's too; a profile is still written to -f or stdout)")
	o.stdout = cmd.OutOrStdout()
}

func (o *profileOptions) run(ctx context.Context, cc clientcmd.ClientConfig, pod string, stdout, stderr io.Writer) error {
	// What the agent would refuse is refused here, before the API server
	// or the agent is asked anything.
	if o.duration <= 0 {
		return fmt.Errorf("-d %v: want a positive duration (10s, 1m)", o.duration)
	}
	if err := checkFormat(o.format); err != nil {
		return err
	}
	if err := o.checkFallback(); err != nil {
		return err
	}
	if o.file == "-" {
		o.file = "" // standard output, as the CLI's -f -
	}
	if o.file == "" && (o.format == "pprof" || o.format == "jfr") && isTerminal(stdout) {
		return fmt.Errorf("-o %s is binary: give -f FILE, or redirect stdout", o.format)
	}
	q := url.Values{"duration": {o.duration.String()}, "format": {o.format}, "event": {o.event}}
	if o.fallback != "" {
		q.Set("fallback", o.fallback)
	}
	// The agent bounds the profile; this bounds an agent that hangs.
	return o.fetch(ctx, cc, pod, "profile", q, o.duration+2*time.Minute, stdout, stderr)
}

// fetch asks action for a profile and writes it to -f or stdout. -f's
// file is prepared first: a profile is not taken for a path that cannot
// be written.
func (o *profileOptions) fetch(ctx context.Context, cc clientcmd.ClientConfig, pod, action string, q url.Values, timeout time.Duration, stdout, stderr io.Writer) error {
	var out *output
	if o.file != "" {
		var err error
		if out, err = prepareOutput(o.file); err != nil {
			return err
		}
	}
	resp, done, err := o.ask(ctx, cc, pod, http.MethodPost, action, q, timeout, stderr)
	if err != nil {
		if out != nil {
			out.discard()
		}
		return err
	}
	defer done()
	return o.save(out, resp, stdout, stderr)
}

// ask sends method to the on-demand API's action for pod, with the
// container flag and q, bounded by timeout; the response when the agent
// answered 200 (done closes it and the way to the agent), else the
// agent's error.
func (o *profileOptions) ask(ctx context.Context, cc clientcmd.ClientConfig, pod, method, action string, q url.Values, timeout time.Duration, stderr io.Writer) (*http.Response, func(), error) {
	ag, err := o.connect(ctx, cc, pod, stderr)
	if err != nil {
		return nil, nil, err
	}
	if o.container != "" {
		q.Set("container", o.container)
	}
	u := ag.base.JoinPath("/apis/safeattach.io/v1/namespaces", ag.namespace, "pods", pod, action)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	done := func() { cancel(); ag.close() }
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		done()
		return nil, nil, err
	}
	resp, err := ag.client.Do(req)
	if err != nil {
		done()
		return nil, nil, fmt.Errorf("%s: %w", ag.where, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer done()
		defer resp.Body.Close()
		return nil, nil, agentError(resp, o.jsonOut(), stderr)
	}
	return resp, func() { resp.Body.Close(); done() }, nil
}

// save writes a profile the agent streams to -f FILE or stdout, and says
// on stderr when the Flight Recorder made it instead of async-profiler.
func (o *profileOptions) save(out *output, resp *http.Response, stdout, stderr io.Writer) error {
	if engine := resp.Header.Get("X-Safeattach-Engine"); engine != "" {
		fmt.Fprintf(stderr, "kubectl-safeattach: profiled by %s: the rules refused async-profiler (%s)\n",
			printable.Line(engineName(engine)), printable.Line(resp.Header.Get("X-Safeattach-Fallback-From")))
	}
	var n int64
	var err error
	if out == nil {
		dst := stdout
		if isTerminal(stdout) {
			// The profile's frames are the target's words (method
			// names): escaped on their way to a terminal.
			esc := printable.NewWriter(stdout)
			defer esc.Close()
			dst = esc
		}
		if n, err = io.Copy(dst, resp.Body); err != nil {
			return fmt.Errorf("the profile was cut off: %w", err)
		}
	} else {
		if n, err = out.write(resp.Body); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "kubectl-safeattach: wrote %s (%d bytes)\n", out.path, n)
	}
	if n == 0 {
		fmt.Fprintln(stderr, "kubectl-safeattach: the profile is empty: no samples were collected (an idle JVM, or an event that did not fire: try -e itimer, or a longer -d)")
	}
	return nil
}

// agentConn is a way to the agent of a pod's node, as the user.
type agentConn struct {
	namespace, where string
	base             *url.URL
	client           *http.Client
	close            func()
}

// connect reads the kubeconfig and reaches the agent of pod's node:
// --direct, or a port-forward through the API server.
func (o *profileOptions) connect(ctx context.Context, cc clientcmd.ClientConfig, pod string, stderr io.Writer) (*agentConn, error) {
	namespace, _, err := cc.Namespace()
	if err != nil {
		return nil, err
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, err
	}
	if err := usableCredentials(cfg); err != nil {
		return nil, err
	}
	ag := &agentConn{namespace: namespace, where: o.direct, close: func() {}}
	insecure, serverName := o.insecure, ""
	if o.direct != "" {
		ag.base, err = url.Parse(o.direct)
		if err != nil || ag.base.Scheme != "https" || ag.base.Host == "" {
			return nil, fmt.Errorf("--direct %q: want the agent's https://HOST:PORT", o.direct)
		}
	} else {
		t, err := openTunnel(ctx, cfg, namespace, pod, o.agentNamespace, o.agentSelector, stderr)
		if err != nil {
			return nil, err
		}
		ag.base, ag.where, ag.close = t.base, "the node agent "+t.agent+" (port-forward)", t.Close
		// The API server chose the far end; a CA given still binds the
		// certificate to the node's name.
		insecure = insecure || o.agentCA == ""
		serverName = t.node
	}
	if ag.client, err = agentClient(cfg, o.agentCA, serverName, insecure); err != nil {
		ag.close()
		return nil, err
	}
	return ag, nil
}

// agentClient sends requests to the agent with the user's credentials
// as client-go presents them to the API server (a bearer token, a token
// file re-read as it changes, or an exec plugin's token), over TLS
// verified against caFile rather than the API server's CA.
func agentClient(cfg *rest.Config, caFile, serverName string, insecure bool) (*http.Client, error) {
	if err := usableCredentials(cfg); err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--agent-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--agent-ca %s: no PEM certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	if hasClientCert(cfg) {
		// The user's certificate, as client-go presents it to the API
		// server; the agent verifies it against the cluster's client CA.
		certs, err := rest.TLSConfigFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{
			CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, CertData: cfg.CertData, KeyData: cfg.KeyData}})
		if err != nil {
			return nil, fmt.Errorf("the kubeconfig's client certificate: %w", err)
		}
		tlsConfig.Certificates, tlsConfig.GetClientCertificate = certs.Certificates, certs.GetClientCertificate
	}
	base := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: 10 * time.Second}
	// The exec plugin's round tripper and the token's are the config's
	// wrappers; TransportConfig turns an exec provider into one.
	tc, err := cfg.TransportConfig()
	if err != nil {
		return nil, err
	}
	wrapped, err := rest.HTTPWrappersForConfig(&rest.Config{
		BearerToken: tc.BearerToken, BearerTokenFile: tc.BearerTokenFile, WrapTransport: tc.WrapTransport,
		UserAgent: "kubectl-safeattach",
	}, base)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: wrapped}, nil
}

func hasClientCert(cfg *rest.Config) bool {
	return (len(cfg.CertData) > 0 || cfg.CertFile != "") && (len(cfg.KeyData) > 0 || cfg.KeyFile != "")
}

// usableCredentials refuses, before anything is sent anywhere, a user
// the agent cannot judge.
func usableCredentials(cfg *rest.Config) error {
	if cfg.BearerToken == "" && cfg.BearerTokenFile == "" && cfg.ExecProvider == nil && cfg.AuthProvider == nil && !hasClientCert(cfg) {
		return errors.New("the kubeconfig's user has no bearer token, token file, exec credential plugin or client certificate: the agent accepts those only (basic auth is not supported)")
	}
	if cfg.Impersonate.UserName != "" || len(cfg.Impersonate.Groups) > 0 || cfg.Impersonate.UID != "" || len(cfg.Impersonate.Extra) > 0 {
		return errors.New("impersonation (--as, --as-group) is not supported by the agent: it judges the token's own user")
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// jsonOut is where the agent's JSON answers go: stdout with --json,
// nowhere without.
func (o *profileOptions) jsonOut() io.Writer {
	if o.json && o.stdout != nil {
		return o.stdout
	}
	return nil
}

// agentError prints, for a refusal by the rules, each finding with its
// remedy as check prints them, and the agent's JSON result to jsonOut
// when not nil; it returns the exit code the agent's result gives (1
// for 401 and 403) with the agent's message.
func agentError(resp *http.Response, jsonOut, stderr io.Writer) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var res verdict
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || json.Unmarshal(body, &res) != nil {
		return &exitError{1, fmt.Sprintf("the agent answered %s: %.500s", printable.Line(resp.Status), printable.Line(strings.TrimSpace(string(body))))}
	}
	if jsonOut != nil {
		// Re-encoded: JSON's escapes reach the terminal, not the
		// agent's bytes (over a tunnel whose far end was not verified
		// they may be anyone's).
		var v any
		if json.Unmarshal(body, &v) == nil {
			enc := json.NewEncoder(jsonOut)
			enc.SetIndent("", "  ")
			enc.Encode(v)
		}
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return &exitError{1, "unauthenticated (401): " + printable.Line(res.Error)}
	case http.StatusForbidden:
		return &exitError{1, "forbidden (403): " + printable.Line(res.Error)}
	}
	code := res.ExitCode
	if code == 0 {
		code = 3 // an error without a code is a failure
	}
	if res.Verdict != nil && !res.Verdict.Allowed {
		// The refusal's reasons and remedies, as check prints them.
		res.printFindings(stderr)
		fmt.Fprintln(stderr)
	}
	return &exitError{code, fmt.Sprintf("%s (%s): %s", printable.Line(res.Outcome), printable.Line(resp.Status), printable.Line(res.Error))}
}

// output is -f's file, prepared before the agent is asked: a path that
// cannot be written is said before a profile is taken (a stop cannot be
// asked twice), and the profile replaces the file whole or not at all.
type output struct {
	path string
	tmp  *os.File
}

// prepareOutput makes the temporary file beside path that becomes path
// once the profile is whole.
func prepareOutput(path string) (*output, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("-f %s: a directory; name the file to write", path)
	}
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("-f %s: cannot write there: %w", path, errors.Unwrap(err))
	}
	return &output{path: path, tmp: tmp}, nil
}

// write copies r into the file and renames it to its path once whole;
// it returns the bytes written.
func (o *output) write(r io.Reader) (int64, error) {
	n, err := io.Copy(o.tmp, r)
	if err != nil {
		o.discard()
		return n, fmt.Errorf("the profile was cut off (%s left as it was): %w", o.path, err)
	}
	for _, step := range []func() error{func() error { return o.tmp.Chmod(0o644) }, o.tmp.Sync, o.tmp.Close} {
		if err := step(); err != nil {
			o.discard()
			return n, fmt.Errorf("-f %s: %w", o.path, err)
		}
	}
	if err := os.Rename(o.tmp.Name(), o.path); err != nil {
		os.Remove(o.tmp.Name())
		return n, fmt.Errorf("-f %s: %w", o.path, err)
	}
	return n, nil
}

// discard removes the temporary file; the path is left as it was.
func (o *output) discard() {
	o.tmp.Close()
	os.Remove(o.tmp.Name())
}

// writeAtomically writes r to path whole or not at all.
func writeAtomically(path string, r io.Reader) error {
	out, err := prepareOutput(path)
	if err != nil {
		return err
	}
	_, err = out.write(r)
	return err
}
