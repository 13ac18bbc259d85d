package kubenode

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Files maps a path inside an image to the host file or directory it is
// copied from (symbolic links followed: an image must not point back into
// the host's tree). A "" source makes an empty directory.
type Files map[string]string

// Image imports an image of files, with entrypoint, into the node's
// containerd and returns its reference. The reference names the content
// (paths, sizes and times of the sources), so a changed source is a new
// image; an image the node already has is not imported again.
func (n *Node) Image(t testing.TB, name string, entrypoint []string, files Files) string {
	t.Helper()
	key := files.key(entrypoint)
	ref := "safeattach.test/" + name + ":" + key
	dir := filepath.Join(n.API.Dir, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// One importer at a time per image, across the test binaries of a run.
	lock, err := os.OpenFile(filepath.Join(dir, name+"-"+key+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if out, err := n.ctr("images", "ls", "-q", "name=="+ref).Output(); err == nil && strings.TrimSpace(string(out)) == ref {
		return ref
	}
	archive := filepath.Join(dir, name+"-"+key+".tar")
	if _, err := os.Stat(archive); err != nil {
		if err := writeArchive(archive, ref, entrypoint, files); err != nil {
			t.Fatalf("image %s: %v", ref, err)
		}
	}
	if out, err := n.ctr("images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", archive, err, out)
	}
	return ref
}

func (n *Node) ctr(args ...string) *exec.Cmd {
	return exec.Command(n.Ctr, append([]string{"--address", n.Socket, "-n", "k8s.io"}, args...)...)
}

func (f Files) key(entrypoint []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\n", entrypoint)
	for _, dst := range f.sorted() {
		src := f[dst]
		fmt.Fprintf(h, "%s<%s", dst, src)
		if src != "" {
			filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
				if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
					fmt.Fprintf(h, "|%s %d %d", p, fi.Size(), fi.ModTime().UnixNano())
				}
				return nil
			})
		}
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (f Files) sorted() []string {
	var dsts []string
	for d := range f {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	return dsts
}

// writeArchive writes a docker-archive (manifest.json, config, one layer)
// of files, through a temporary name renamed into place.
func writeArchive(out, ref string, entrypoint []string, files Files) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".image-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	layer, err := os.CreateTemp(filepath.Dir(out), ".layer-")
	if err != nil {
		return err
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	sum := sha256.New()
	if err := writeLayer(io.MultiWriter(layer, sum), files); err != nil {
		return err
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": entrypoint, "Env": []string{"PATH=/usr/local/bin:/usr/bin:/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum.Sum(nil))}},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{ref}, "Layers": []string{"layer.tar"}}})
	tw := tar.NewWriter(tmp)
	for _, f := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {"config.json", config}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		tw.Write(f.data)
	}
	fi, err := layer.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "layer.tar", Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := layer.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(tw, layer); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// writeLayer writes the image's tree: every parent directory once, files
// with their modes, owned by root.
func writeLayer(w io.Writer, files Files) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	mkdir := func(p string, mode int64) error {
		var parents []string
		for d := p; d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			d := parents[i]
			dirs[d] = true
			m := int64(0o755)
			if d == p {
				m = mode
			}
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: m, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
		return nil
	}
	addFile := func(dst, src string, fi fs.FileInfo) error {
		if err := mkdir(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := tw.WriteHeader(&tar.Header{Name: dst, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	}
	for _, dst := range files.sorted() {
		src := files[dst]
		rel := strings.TrimPrefix(filepath.Clean(dst), "/")
		if src == "" {
			mode := int64(0o755)
			if rel == "tmp" {
				mode = 0o1777
			}
			if err := mkdir(rel, mode); err != nil {
				return err
			}
			continue
		}
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			if err := addFile(rel, src, fi); err != nil {
				return err
			}
			continue
		}
		err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Stat(p) // follows links
			if err != nil {
				return nil // a dangling link: nothing to copy
			}
			r, _ := filepath.Rel(src, p)
			target := filepath.Join(rel, r)
			if fi.IsDir() {
				if d.Type()&fs.ModeSymlink != 0 {
					return nil // a linked directory: its files are reached elsewhere or not at all
				}
				return mkdir(target, int64(fi.Mode().Perm()))
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
			return addFile(target, p, fi)
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
