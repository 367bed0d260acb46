package main

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// protocolDoc is docs/protocol.md, read from the checkout.
func protocolDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section is the part of doc from the heading head to the next heading of
// the same or a higher level.
func section(t *testing.T, doc, head string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+head+"\n")
	if i < 0 {
		t.Fatalf("docs/protocol.md has no heading %q", head)
	}
	rest := doc[i+len(head)+2:]
	level := strings.Repeat("#", strings.Index(head, " "))
	for _, m := range regexp.MustCompile(`(?m)^#+ `).FindAllStringIndex(rest, -1) {
		if m[1]-m[0]-1 <= len(level) {
			return rest[:m[0]]
		}
	}
	return rest
}

// eventKinds lists every event kind the sidecar can send: the procmon.Kind
// constants of procmon and the bridge layer, and the states of the bridge
// layer that the monitor parks in, which it announces as events of their
// own name.
func eventKinds(t *testing.T) map[string]string {
	t.Helper()
	kinds := map[string]string{}
	for _, root := range []string{"procmon", "bridge"} {
		err := filepath.WalkDir(filepath.Join("..", "..", root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					if !isEventKindType(vs.Type, f.Name.Name) {
						continue
					}
					for i, name := range vs.Names {
						lit, ok := vs.Values[i].(*ast.BasicLit)
						if !ok {
							continue
						}
						v, err := strconv.Unquote(lit.Value)
						if err != nil {
							return err
						}
						kinds[v] = name.Name + " in " + path
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(kinds) < 30 {
		t.Fatalf("found only %d event kinds in the source: %v", len(kinds), kinds)
	}
	return kinds
}

func isEventKindType(typ ast.Expr, pkg string) bool {
	switch x := typ.(type) {
	case *ast.Ident:
		return pkg == "procmon" && x.Name == "Kind"
	case *ast.SelectorExpr:
		id, ok := x.X.(*ast.Ident)
		return ok && id.Name == "procmon" && (x.Sel.Name == "Kind" || x.Sel.Name == "State")
	}
	return false
}

// docs/protocol.md is enough to write a client: its event reference has a
// row for every kind of event the code can send.
func TestProtocolDocNamesEveryEventKind(t *testing.T) {
	ref := section(t, protocolDoc(t), "### event")
	for kind, where := range eventKinds(t) {
		if !strings.Contains(ref, "\n| `"+kind+"` |") {
			t.Errorf("docs/protocol.md's event reference has no row for %q (%s)", kind, where)
		}
	}
}

// The websockets example of docs/protocol.md, as printed there, runs with
// the system's Python and its python3-websockets (Debian's, as in CI)
// against a real sidecar: it follows the feed through a restart and ends
// cleanly when the sidecar exits.
func TestProtocolDocPythonExampleRuns(t *testing.T) {
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import websockets").CombinedOutput(); err != nil {
		t.Skipf("the protocol doc's Python example needs %s with websockets (apt install python3-websockets; .ci/run installs it): %v %s", python, err, out)
	}
	blocks := regexp.MustCompile("(?s)```python\n(.*?)```").FindAllStringSubmatch(section(t, protocolDoc(t), "## Python"), -1)
	if len(blocks) != 1 {
		t.Fatalf("the Python section of docs/protocol.md has %d python blocks, want 1", len(blocks))
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "example.py")
	if err := os.WriteFile(script, []byte(blocks[0][1]), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, fake := binaries(t)
	state := filepath.Join(dir, "state")
	p := startSidecar(t, bin, "run", "--state-dir", state, "--listen", "127.0.0.1:0", "--", fake, "-hang")
	first := pidOf(t, p.waitLog("bridge started"))

	py := exec.Command(python, script, state)
	stdout, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	py.Stderr = &stderr
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if py.ProcessState == nil {
			py.Process.Kill()
			py.Wait()
		}
	})
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	var seen []string
	expect := func(want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the example ended before printing %q; it printed %q, stderr:\n%s", want, seen, stderr.String())
				}
				seen = append(seen, l)
				if l == want {
					return
				}
			case <-timeout:
				t.Fatalf("the example did not print %q; it printed %q, stderr:\n%s", want, seen, stderr.String())
			}
		}
	}
	expect("hello running control")
	p.signal(syscall.SIGHUP) // a restart, as `wa-sidecar restart` asks
	expect("stopping stopping")
	expect("started running")
	if second := pidOf(t, p.waitLog("bridge started")); second == first {
		t.Fatalf("the bridge was not restarted (pid %d)", second)
	}
	p.stopOK()
	expect("stopped stopped")
	for l := range lines {
		seen = append(seen, l)
	}
	if err := py.Wait(); err != nil {
		t.Fatalf("the example exited with %v when the sidecar stopped; it printed %q, stderr:\n%s", err, seen, stderr.String())
	}
}
