package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// krewPlugin is what TestKrewManifest reads of a krew Plugin.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		ShortDescription string `json:"shortDescription"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestKrewManifest: deploy/krew/safeattach.yaml is a krew Plugin named
// safeattach (kubectl safeattach) for linux/amd64 whose archive holds
// the binary make plugin builds, and says its release placeholders.
func TestKrewManifest(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/krew/safeattach.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "safeattach" {
		t.Errorf("not the krew Plugin safeattach: apiVersion %q kind %q name %q", p.APIVersion, p.Kind, p.Metadata.Name)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+`).MatchString(p.Spec.Version) || p.Spec.ShortDescription == "" {
		t.Errorf("spec.version %q (want vX.Y.Z), shortDescription %q", p.Spec.Version, p.Spec.ShortDescription)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, pl := range p.Spec.Platforms {
		if pl.Selector.MatchLabels["os"] != "linux" || pl.Selector.MatchLabels["arch"] != "amd64" {
			continue
		}
		found = true
		if pl.Bin != "kubectl-safeattach" {
			t.Errorf("linux/amd64 bin %q, want kubectl-safeattach", pl.Bin)
		}
		if !strings.Contains(string(makefile), "-o bin/"+pl.Bin+" ./cmd/kubectl-safeattach") {
			t.Errorf("make plugin does not build bin/%s", pl.Bin)
		}
		shipped := false
		for _, f := range pl.Files {
			shipped = shipped || f.From == pl.Bin
		}
		if !shipped {
			t.Errorf("linux/amd64 files %v do not take %s from the archive", pl.Files, pl.Bin)
		}
		if !strings.HasPrefix(pl.URI, "https://") || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(pl.SHA256) {
			t.Errorf("linux/amd64 uri %q (want https), sha256 %q (want 64 hex digits)", pl.URI, pl.SHA256)
		}
	}
	if !found {
		t.Error("no linux/amd64 platform")
	}
	if !strings.Contains(string(raw), "filled in at release") {
		t.Error("the manifest does not say that its uri and sha256 are filled in at release")
	}
}

// TestVersion: the plugin says the version it was built with.
func TestVersion(t *testing.T) {
	r := kubectl(t, os.DevNull, "--version")
	if r.code != 0 || !strings.Contains(r.stdout, testVersion) {
		t.Errorf("--version: exit %d, %q, want %s", r.code, r.stdout+r.stderr, testVersion)
	}
}
