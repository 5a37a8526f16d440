package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// This file enforces the layout rules of DESIGN.md ("Layout"): which of
// Tandem's packages may import which. It reads the import graph from
// `go list`, so it imports nothing of ours. Packages that do not exist yet
// are simply absent from the graph.

// layerRule says which of our packages a top-level folder may depend on.
type layerRule struct {
	// ours lists the packages (relative to the module, "engine") or
	// subtrees ("engine/...") that the folder's code may depend on,
	// transitively, besides the folder itself.
	ours []string
	// testOurs lists what its tests may import directly; nil means the
	// same as ours.
	testOurs []string
	// foreign lists import path prefixes it must not depend on.
	foreign []string
}

const pebble = "github.com/cockroachdb/pebble"

// layers are DESIGN.md's rules, by top-level folder.
var layers = map[string]layerRule{
	// The routing core imports no other package of ours, and no storage:
	// it defines the Store interface that persist implements. Its
	// subpackages (memstore, storetest) import engine.
	"engine": {ours: nil, testOurs: []string{"engine/..."}},
	// The Pebble store implements engine.Store; its tests run the
	// engine/storetest suite.
	"persist": {ours: []string{"engine"}, testOurs: []string{"engine/..."}},
	// Shared adapter helpers sit on the engine only.
	"protocol": {ours: []string{"engine"}, testOurs: []string{"engine/..."}},
	// The adapters never import each other, nor Pebble (storage is the
	// engine's business).
	"mqtt":  {ours: []string{"protocol/...", "engine"}, testOurs: []string{"protocol/...", "engine/..."}, foreign: []string{pebble}},
	"stomp": {ours: []string{"protocol/...", "engine"}, testOurs: []string{"protocol/...", "engine/..."}, foreign: []string{pebble}},
	// Black-box tests: real clients against a real broker process.
	"conformance": {ours: nil},
	// The binary wires everything together.
	"cmd": {ours: []string{"..."}},
}

// engineRoot is the engine package itself, which must stay free of Pebble.
const engineRoot = "engine"

// listedPackage is the part of `go list -json` output the rules need.
type listedPackage struct {
	ImportPath   string
	Standard     bool
	Module       *struct{ Path string }
	Deps         []string
	TestImports  []string
	XTestImports []string
}

// modulePath returns our module's path and root directory.
func modulePath(t *testing.T) (path, dir string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}}\n{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", exitDetail(err))
	}
	fields := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(fields) != 2 {
		t.Fatalf("go list -m printed %q", out)
	}
	return fields[0], fields[1]
}

// exitDetail adds a failed command's stderr to its error.
func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err
}

// ourPackages lists the module's packages with their dependencies.
func ourPackages(t *testing.T, module, dir string) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-json", "./...")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", exitDetail(err))
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if !p.Standard && p.Module != nil && p.Module.Path == module {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found none of our packages")
	}
	return pkgs
}

// rel returns path relative to the module ("engine/memstore"), and whether
// it is one of ours.
func rel(module, path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// topLevel is the first element of a relative package path.
func topLevel(r string) string {
	top, _, _ := strings.Cut(r, "/")
	return top
}

// allowed reports whether pattern ("engine", "engine/...", "...") covers
// the relative package path r.
func allowed(patterns []string, r string) bool {
	for _, p := range patterns {
		switch {
		case p == "...":
			return true
		case strings.HasSuffix(p, "/..."):
			root := strings.TrimSuffix(p, "/...")
			if r == root || strings.HasPrefix(r, root+"/") {
				return true
			}
		case p == r:
			return true
		}
	}
	return false
}

// TestLayout checks every package of ours against DESIGN.md's layout rules.
func TestLayout(t *testing.T) {
	module, dir := modulePath(t)
	for _, p := range ourPackages(t, module, dir) {
		self, _ := rel(module, p.ImportPath)
		top := topLevel(self)
		rule, known := layers[top]
		if !known {
			t.Errorf("%s: top-level folder %q is not in DESIGN.md's layout; give it a rule in %s and a reason in README.md",
				p.ImportPath, top, filepath.Join("conformance", "imports_test.go"))
			continue
		}
		check := func(kind string, deps, ours []string) {
			for _, d := range deps {
				r, isOurs := rel(module, d)
				if !isOurs {
					for _, f := range rule.foreign {
						if strings.HasPrefix(d, f) {
							t.Errorf("%s %s %s: %s must not depend on %s", p.ImportPath, kind, d, top, f)
						}
					}
					if self == engineRoot && strings.HasPrefix(d, pebble) {
						t.Errorf("%s %s %s: the engine must not depend on Pebble (persist does)", p.ImportPath, kind, d)
					}
					continue
				}
				switch {
				case topLevel(r) == "cmd" && top != "cmd":
					t.Errorf("%s %s %s: no package may import cmd", p.ImportPath, kind, d)
				case topLevel(r) == top:
					// Within one folder: engine/memstore imports engine.
				case !allowed(ours, r):
					t.Errorf("%s %s %s: %s may depend only on %s of ours (DESIGN.md, Layout)",
						p.ImportPath, kind, d, top, describe(ours))
				}
			}
		}
		check("depends on", p.Deps, rule.ours)
		testOurs := rule.testOurs
		if testOurs == nil {
			testOurs = rule.ours
		}
		check("test imports", slices.Concat(p.TestImports, p.XTestImports), testOurs)
	}
}

// describe names a pattern list for an error message.
func describe(patterns []string) string {
	if len(patterns) == 0 {
		return "nothing"
	}
	return strings.Join(patterns, ", ")
}

// TestLayoutRules checks the matcher the rules rely on.
func TestLayoutRules(t *testing.T) {
	cases := []struct {
		patterns []string
		r        string
		want     bool
	}{
		{[]string{"engine"}, "engine", true},
		{[]string{"engine"}, "engine/memstore", false},
		{[]string{"engine/..."}, "engine/memstore", true},
		{[]string{"engine/..."}, "engine", true},
		{[]string{"engine/..."}, "enginex", false},
		{[]string{"protocol/...", "engine"}, "stomp", false},
		{nil, "engine", false},
		{[]string{"..."}, "persist", true},
	}
	for _, c := range cases {
		if got := allowed(c.patterns, c.r); got != c.want {
			t.Errorf("allowed(%q, %q) = %v, want %v", c.patterns, c.r, got, c.want)
		}
	}
}
