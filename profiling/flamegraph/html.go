package flamegraph

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// Options say what a flame graph shows.
type Options struct {
	// Title is the page's title and heading: what was sampled.
	Title string
	// Note is the line under the heading: what made the stacks and which
	// frames they can hold, so that a reader knows what is missing.
	Note string
	// Unit names what a count is: "samples" when empty.
	Unit string
}

// page is the HTML around the data; page.js draws it.
//
//go:embed page.html
var page string

//go:embed page.js
var script string

// graph is the document the page's script reads.
type graph struct {
	Unit  string   `json:"unit"`
	Names []string `json:"names"`
	// Nodes is the call tree in preorder, three numbers a node: its depth
	// (the root, "all", is 0), the index of its name in Names and its
	// total count. A tree, not the stacks: a frame shared by many stacks
	// is written once, which keeps a busy service's page small.
	Nodes []int64 `json:"nodes"`
}

type node struct {
	name     int
	total    int64
	children map[int]*node
}

// WriteHTML writes stacks as a flame graph: one HTML page that needs
// nothing else. Stacks with no positive count are left out; counts that
// add up past MaxTotal are an error, since the page could not show them
// exactly.
func WriteHTML(w io.Writer, stacks []Stack, o Options) error {
	if o.Unit == "" {
		o.Unit = "samples"
	}
	g := graph{Unit: o.Unit, Names: []string{"all"}}
	root, err := g.tree(stacks)
	if err != nil {
		return err
	}
	g.flatten(root)
	data, err := scriptJSON(g)
	if err != nil {
		return fmt.Errorf("flame graph: %w", err)
	}
	r := strings.NewReplacer(
		"{{TITLE}}", html.EscapeString(strings.ToValidUTF8(o.Title, "\uFFFD")),
		"{{NOTE}}", html.EscapeString(strings.ToValidUTF8(o.Note, "\uFFFD")),
		"{{DATA}}", data,
		"{{SCRIPT}}", script,
	)
	_, err = r.WriteString(w, page)
	return err
}

// tree merges the stacks into a call tree whose frames are indexes
// into g.Names. Names are made valid UTF-8 here, one U+FFFD for each
// bad run, so that the page is UTF-8 and equal names stay one.
func (g *graph) tree(stacks []Stack) (*node, error) {
	index := map[string]int{"all": 0}
	nameOf := func(s string) int {
		s = strings.ToValidUTF8(s, "\uFFFD")
		i, ok := index[s]
		if !ok {
			i = len(g.Names)
			index[s] = i
			g.Names = append(g.Names, s)
		}
		return i
	}
	// The root's name is "all", which a frame may be called as well: the
	// table is searched for frames only after the root took index 0.
	root := &node{name: 0}
	for _, s := range stacks {
		if s.Count <= 0 {
			continue
		}
		if root.total += s.Count; root.total > MaxTotal {
			return nil, fmt.Errorf("flame graph: the counts add up to more than %d", int64(MaxTotal))
		}
		n := root
		for _, f := range s.Frames {
			k := nameOf(f)
			c := n.children[k]
			if c == nil {
				if n.children == nil {
					n.children = map[int]*node{}
				}
				c = &node{name: k}
				n.children[k] = c
			}
			c.total += s.Count
			n = c
		}
	}
	if root.total == 0 {
		return nil, errors.New("flame graph: no samples to draw")
	}
	return root, nil
}

// flatten writes the tree into g.Nodes in preorder, without recursion:
// a hostile input's stack can be millions of frames deep.
func (g *graph) flatten(root *node) {
	type item struct {
		n     *node
		depth int64
	}
	todo := []item{{root, 0}}
	for len(todo) > 0 {
		it := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		g.Nodes = append(g.Nodes, it.depth, int64(it.n.name), it.n.total)
		kids := make([]*node, 0, len(it.n.children))
		for _, c := range it.n.children {
			kids = append(kids, c)
		}
		// Children left to right by name, as flame graphs draw them;
		// pushed in reverse so that the first comes off the stack first.
		slices.SortFunc(kids, func(a, b *node) int { return strings.Compare(g.Names[b.name], g.Names[a.name]) })
		for _, c := range kids {
			todo = append(todo, item{c, it.depth + 1})
		}
	}
}

// scriptJSON is v as JSON that can stand inside a <script> element: the
// HTML parser ends a script at the first "</script" whatever the
// script's type, and "<!--" changes how it looks for that end, so no
// '<' may appear; '>' and '&' are escaped as well, and U+2028 and
// U+2029, which end a line in older JavaScript. encoding/json escapes
// all five inside strings (its HTML-safe default), the only place where
// a name from the target can put them; the check below keeps that true
// should the encoding ever change.
func scriptJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	s := string(b)
	if strings.ContainsAny(s, "<>&\u2028\u2029") {
		return "", errors.New("the data is not safe to put in a script")
	}
	return s, nil
}
