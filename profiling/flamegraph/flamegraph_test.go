package flamegraph

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"
)

// hostile is a frame name a target can give a method: in a recording,
// a class or method name is any string.
const hostile = "</script><script>alert(1)</script>"

// readPage parses page as a browser would and returns the graph its
// data element holds. It fails unless the page has exactly its own two
// scripts: a frame name that closed the data element would add one.
func readPage(t testing.TB, page []byte) graph {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatalf("the page does not parse: %v", err)
	}
	var scripts []*html.Node
	var title string
	for n := range doc.Descendants() {
		if n.Type == html.ElementNode && n.Data == "script" {
			scripts = append(scripts, n)
		}
		if n.Type == html.ElementNode && n.Data == "title" && n.FirstChild != nil {
			title = n.FirstChild.Data
		}
	}
	if len(scripts) != 2 {
		t.Fatalf("the page has %d script elements, want 2 (data and code)", len(scripts))
	}
	if title == "" {
		t.Error("the page has no title")
	}
	data := scripts[0]
	if id := attr(data, "id"); id != "data" || attr(data, "type") != "application/json" || data.FirstChild == nil {
		t.Fatalf("the first script is not the data: id %q", id)
	}
	text := data.FirstChild.Data
	if strings.ContainsAny(text, "<>&\u2028\u2029") {
		t.Errorf("the data holds an unescaped <, >, &, U+2028 or U+2029")
	}
	var g graph
	if err := json.Unmarshal([]byte(text), &g); err != nil {
		t.Fatalf("the data is not JSON: %v", err)
	}
	return g
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// checkTree: the nodes are a tree in preorder whose root holds every
// sample and whose children never hold more than their parent.
func checkTree(t testing.TB, g graph, total int64) {
	t.Helper()
	if len(g.Nodes) < 3 || len(g.Nodes)%3 != 0 || g.Nodes[0] != 0 || g.Nodes[1] != 0 || g.Nodes[2] != total {
		t.Fatalf("the tree does not start with the root of %d samples: %v", total, g.Nodes[:min(len(g.Nodes), 3)])
	}
	var open []int64 // what each open ancestor has left for its children
	for i := 0; i < len(g.Nodes); i += 3 {
		depth, name, n := g.Nodes[i], g.Nodes[i+1], g.Nodes[i+2]
		if depth > int64(len(open)) || name < 0 || name >= int64(len(g.Names)) || n <= 0 {
			t.Fatalf("node %d: depth %d under %d open, name %d of %d, total %d", i/3, depth, len(open), name, len(g.Names), n)
		}
		open = open[:depth]
		if depth > 0 {
			if open[depth-1] < n {
				t.Fatalf("node %d (%s) holds more than its parent has left", i/3, g.Names[name])
			}
			open[depth-1] -= n
		}
		open = append(open, n)
	}
}

// TestHostileFrameNames: frame names made to break out of the data — a
// script end tag, a comment start, line separators, entities — are
// data in the page, shown as they are, and never markup or code.
func TestHostileFrameNames(t *testing.T) {
	names := []string{hostile, "<!--<script>", "a\u2028b\u2029c", "&lt;&amp;", `"quoted" \back\slash`, "\xff\xfeinvalid"}
	var stacks []Stack
	for i, n := range names {
		stacks = append(stacks, Stack{Frames: []string{"java.lang.Thread.run", n}, Count: int64(i + 1)})
	}
	var b bytes.Buffer
	if err := WriteHTML(&b, stacks, Options{Title: hostile, Note: "<b>note</b>"}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, bad := range []string{"<script>alert", "<!--<script>", "\u2028", "<b>note"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page holds %q as it came", bad)
		}
	}
	g := readPage(t, b.Bytes())
	checkTree(t, g, 21)
	for _, n := range names {
		want := strings.ToValidUTF8(n, "\uFFFD")
		if !slices.Contains(g.Names, want) {
			t.Errorf("the name %q is not in the data as it was", n)
		}
	}
}

// TestTree: stacks that share callers share nodes, children are in the
// order of their names, and each node's total is the samples under it.
func TestTree(t *testing.T) {
	stacks := []Stack{
		{Frames: []string{"main", "b"}, Count: 2},
		{Frames: []string{"main", "a", "x"}, Count: 3},
		{Frames: []string{"main"}, Count: 1},
		{Frames: []string{"main", "a"}, Count: 4},
		{Frames: []string{"ignored"}, Count: 0},
	}
	var b bytes.Buffer
	if err := WriteHTML(&b, stacks, Options{Title: "t"}); err != nil {
		t.Fatal(err)
	}
	g := readPage(t, b.Bytes())
	checkTree(t, g, 10)
	var got []string
	for i := 0; i < len(g.Nodes); i += 3 {
		got = append(got, strings.Repeat(" ", int(g.Nodes[i]))+g.Names[g.Nodes[i+1]]+" "+itoa(g.Nodes[i+2]))
	}
	want := []string{"all 10", " main 10", "  a 7", "   x 3", "  b 2"}
	if !slices.Equal(got, want) {
		t.Errorf("tree\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if g.Unit != "samples" {
		t.Errorf("unit %q", g.Unit)
	}
	if err := WriteHTML(&b, stacks[4:], Options{}); err == nil {
		t.Error("a graph of no samples was drawn")
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestCollapsed: what WriteCollapsed writes ParseCollapsed reads back,
// and a name holding the format's separators stays one frame on one
// line.
func TestCollapsed(t *testing.T) {
	stacks := []Stack{
		{Frames: []string{"java.lang.Thread.run", "Target.spin"}, Count: 7},
		{Frames: []string{"a;b", "line\nbreak", "with space"}, Count: 2},
	}
	var b bytes.Buffer
	if err := WriteCollapsed(&b, stacks); err != nil {
		t.Fatal(err)
	}
	want := "java.lang.Thread.run;Target.spin 7\na?b;line?break;with space 2\n"
	if b.String() != want {
		t.Errorf("collapsed:\n%q\nwant\n%q", b.String(), want)
	}
	back, err := ParseCollapsed(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 2 || !slices.Equal(back[0].Frames, stacks[0].Frames) || back[1].Count != 2 || len(back[1].Frames) != 3 {
		t.Errorf("read back %v", back)
	}
	for _, bad := range []string{"a;b\n", "a;b x\n", "a;b -1\n", "a;b 0\n", "a 9007199254740992\nb 1\n"} {
		if _, err := ParseCollapsed(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	merged := Sort([]Stack{{Frames: []string{"b"}, Count: 1}, {Frames: []string{"a"}, Count: 2}, {Frames: []string{"b"}, Count: 3}})
	if len(merged) != 2 || merged[0].Frames[0] != "a" || merged[1].Count != 4 {
		t.Errorf("sorted %v", merged)
	}
}

// FuzzWriteHTML: any collapsed input that parses draws a page whose
// data is the input's names and counts, and whose markup has no more
// than its own two scripts. Seeds are in testdata/fuzz/FuzzWriteHTML.
func FuzzWriteHTML(f *testing.F) {
	f.Add([]byte("java.lang.Thread.run;Target.spin 42\n"))
	f.Add([]byte("main;" + hostile + " 1\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		stacks, err := ParseCollapsed(bytes.NewReader(in))
		if err != nil {
			return
		}
		var total int64
		names := map[string]bool{}
		for _, s := range stacks {
			total += s.Count
			for _, n := range s.Frames {
				names[strings.ToValidUTF8(n, "\uFFFD")] = true
			}
		}
		var b bytes.Buffer
		if err := WriteHTML(&b, stacks, Options{Title: string(in)}); err != nil {
			if total == 0 {
				return
			}
			t.Fatal(err)
		}
		g := readPage(t, b.Bytes())
		checkTree(t, g, total)
		for n := range names {
			if !slices.Contains(g.Names, n) {
				t.Fatalf("the name %q is missing from the data", n)
			}
		}
		if !utf8.ValidString(b.String()) {
			t.Fatal("the page is not UTF-8")
		}
	})
}
