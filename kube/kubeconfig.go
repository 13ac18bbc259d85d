package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/target"
)

// kubeconfig is the part of a kubeconfig file used to reach the API with
// a token or a client certificate. Exec and auth-provider plugins are not
// run: a CLI that attaches to production JVMs does not execute programs
// named in a file it was pointed at.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Contexts       []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster string `yaml:"cluster"`
			User    string `yaml:"user"`
		} `yaml:"context"`
	} `yaml:"contexts"`
	Clusters []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server                   string `yaml:"server"`
			CertificateAuthority     string `yaml:"certificate-authority"`
			CertificateAuthorityData string `yaml:"certificate-authority-data"`
			InsecureSkipTLSVerify    bool   `yaml:"insecure-skip-tls-verify"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			Token                 string `yaml:"token"`
			TokenFile             string `yaml:"tokenFile"`
			ClientCertificate     string `yaml:"client-certificate"`
			ClientCertificateData string `yaml:"client-certificate-data"`
			ClientKey             string `yaml:"client-key"`
			ClientKeyData         string `yaml:"client-key-data"`
		} `yaml:"user"`
	} `yaml:"users"`
}

const maxKubeconfig = 4 << 20

// DefaultKubeconfig is $KUBECONFIG's first file, else ~/.kube/config.
func DefaultKubeconfig() string {
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return filepath.SplitList(env)[0]
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".kube", "config")
}

// APIClient connects to the Kubernetes API: from the pod's service account
// when running in a cluster, else from the kubeconfig at path (""
// is DefaultKubeconfig).
func APIClient(ctx context.Context, path string) (*APIPods, error) {
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		return InClusterPods(ctx, "")
	}
	if path == "" {
		path = DefaultKubeconfig()
	}
	f, err := safefile.Read(ctx, path, maxKubeconfig, safefile.Options{})
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	var kc kubeconfig
	// yaml.v3 bounds alias expansion itself; the file is size-capped above.
	if err := yaml.Unmarshal(f.Data, &kc); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	base := filepath.Dir(path)
	var clusterName, userName string
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	if clusterName == "" {
		return nil, fmt.Errorf("kubeconfig %s: no current context %q", path, kc.CurrentContext)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	api := &APIPods{}
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		api.Server = strings.TrimRight(c.Cluster.Server, "/")
		ca, err := fileOrData(ctx, base, c.Cluster.CertificateAuthority, c.Cluster.CertificateAuthorityData)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig cluster %s: %w", clusterName, err)
		}
		if ca != nil {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				return nil, fmt.Errorf("kubeconfig cluster %s: no certificate in its CA", clusterName)
			}
			tlsConf.RootCAs = pool
		}
		tlsConf.InsecureSkipVerify = c.Cluster.InsecureSkipTLSVerify
	}
	if u, err := url.Parse(api.Server); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig cluster %q: server %q is not an http(s) URL", clusterName, api.Server)
	}
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		api.Token = u.User.Token
		if u.User.TokenFile != "" {
			tok, err := fileOrData(ctx, base, u.User.TokenFile, "")
			if err != nil {
				return nil, fmt.Errorf("kubeconfig user %s: %w", userName, err)
			}
			api.Token = strings.TrimSpace(string(tok))
		}
		cert, err := fileOrData(ctx, base, u.User.ClientCertificate, u.User.ClientCertificateData)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig user %s: %w", userName, err)
		}
		key, err := fileOrData(ctx, base, u.User.ClientKey, u.User.ClientKeyData)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig user %s: %w", userName, err)
		}
		if cert != nil || key != nil {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("kubeconfig user %s: client certificate: %w", userName, err)
			}
			tlsConf.Certificates = []tls.Certificate{pair}
		}
		if api.Token == "" && cert == nil {
			return nil, fmt.Errorf("kubeconfig user %s: no token or client certificate (exec and auth-provider plugins are not run; use a token)", userName)
		}
	}
	api.Client = &http.Client{Timeout: listTimeout, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	return api, nil
}

// fileOrData returns inline base64 data, else the file's content (a
// relative path is relative to the kubeconfig), else nil.
func fileOrData(ctx context.Context, base, path, data string) ([]byte, error) {
	if data != "" {
		return base64.StdEncoding.DecodeString(data)
	}
	if path == "" {
		return nil, nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(base, path)
	}
	f, err := safefile.Read(ctx, path, maxSAFile, safefile.Options{})
	if err != nil {
		return nil, err
	}
	return f.Data, nil
}

// Pod reads one pod from the API.
func (a *APIPods) Pod(ctx context.Context, namespace, name string) (Pod, error) {
	u := a.Server + "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(name)
	data, status, err := a.get(ctx, u)
	if err != nil {
		return Pod{}, err
	}
	if status == http.StatusNotFound {
		return Pod{}, fmt.Errorf("pod %s/%s: not found", namespace, name)
	}
	if status != http.StatusOK {
		return Pod{}, fmt.Errorf("pod %s/%s: API answered %d: %.200s", namespace, name, status, data)
	}
	return parsePod(data)
}

// maxPod bounds one pod object (Kubernetes caps annotations at 256 KiB
// and the whole object at about 1.5 MiB in etcd).
const maxPod = 4 << 20

// get reads one bounded response.
func (a *APIPods) get(ctx context.Context, u string) ([]byte, int, error) {
	resp, err := a.do(ctx, u)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxPod+1))
	if err != nil {
		return nil, 0, fmt.Errorf("kubernetes API: %w", err)
	}
	if len(data) > maxPod {
		return nil, 0, fmt.Errorf("kubernetes API: response larger than %d bytes", maxPod)
	}
	return data, resp.StatusCode, nil
}

// do sends one authenticated GET; the caller reads and closes the body.
func (a *APIPods) do(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	token := a.Token
	if a.TokenFile != "" {
		f, err := safefile.Read(ctx, a.TokenFile, maxSAFile, safefile.Options{})
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		token = strings.TrimSpace(string(f.Data))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: listTimeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubernetes API: %w", err)
	}
	return resp, nil
}

// ErrOtherNode: the pod runs on another node; safeattach must run there.
var ErrOtherNode = errors.New("the pod runs on another node")

// ContainerID picks the container of pod to attach to: the one named, or
// the only one. It checks that the pod runs on node (when node is set) and
// that the container is running, and returns its runtime ID.
func (p Pod) ContainerID(container, node string) (string, error) {
	name := p.Namespace + "/" + p.Name
	if node != "" && p.Node != "" && !strings.EqualFold(p.Node, node) {
		return "", fmt.Errorf("pod %s runs on node %s, this is %s: run safeattach there (%w)", name, p.Node, node, ErrOtherNode)
	}
	if p.Phase != "Running" {
		return "", fmt.Errorf("pod %s is %s, not Running", name, orUnknown(p.Phase))
	}
	if container == "" {
		if len(p.Containers) == 1 && len(p.declared) <= 1 {
			return target.NormalizeContainerID(p.Containers[0].ID), nil
		}
		return "", fmt.Errorf("pod %s has containers %s: name one (pod:%s/CONTAINER)", name, strings.Join(p.containerNames(), ", "), name)
	}
	for _, c := range p.Containers {
		if c.Name == container {
			return target.NormalizeContainerID(c.ID), nil
		}
	}
	for _, d := range p.declared {
		if d == container {
			return "", fmt.Errorf("pod %s: container %s is not running", name, container)
		}
	}
	return "", fmt.Errorf("pod %s has no container %s (it has %s)", name, container, strings.Join(p.containerNames(), ", "))
}

func (p Pod) containerNames() []string {
	if len(p.declared) > 0 {
		return p.declared
	}
	var out []string
	for _, c := range p.Containers {
		out = append(out, c.Name)
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "in an unknown phase"
	}
	return s
}
