package cli_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/coil-net/coil/internal/cli"
)

// runIO runs coilctl against the env's etcd with the given stdin and stderr.
func (e *env) runIO(stdin io.Reader, stderr io.Writer, args ...string) (stdout string, code int) {
	e.t.Helper()
	all := append([]string{"--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","), "--timeout", "20s"}, args...)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = cli.Main(ctx, all, cli.Env{
		Stdout: &out, Stderr: stderr, Stdin: stdin, Clock: fixedClock{t0},
		Getenv: func(k string) string {
			if k == "USER" {
				return "tester"
			}
			return ""
		},
	})
	return out.String(), code
}

const prompt = "Proceed? [y/N] "

// runTTY runs coilctl with a pseudo-terminal as its stdin and stderr, as an operator at a
// terminal would. When the prompt shows, it types answer and Enter (answer "\x04" is
// Ctrl-D: end of input). It returns the result with stderr = everything the terminal
// showed (the prompt, the echoed answer, errors), "\r" removed.
func (e *env) runTTY(answer string, args ...string) result {
	e.t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		e.t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	chunks := make(chan []byte, 64)
	go func() {
		defer close(chunks)
		buf := make([]byte, 4096)
		for {
			n, rerr := ptmx.Read(buf)
			if n > 0 {
				chunks <- append([]byte(nil), buf[:n]...)
			}
			if rerr != nil {
				return
			}
		}
	}()
	type ran struct {
		stdout string
		code   int
	}
	done := make(chan ran, 1)
	go func() {
		out, code := e.runIO(tty, tty, args...)
		done <- ran{out, code}
	}()
	var screen strings.Builder
	answered := false
	var r ran
wait:
	for {
		select {
		case c := <-chunks:
			screen.Write(c)
			if !answered && strings.Contains(screen.String(), prompt) {
				if answer != "\x04" {
					answer += "\n"
				}
				if _, err := ptmx.WriteString(answer); err != nil {
					e.t.Fatal(err)
				}
				answered = true
			}
		case r = <-done:
			break wait
		}
	}
	_ = tty.Close() // the reader then sees what is left, then EIO
	for c := range chunks {
		screen.Write(c)
	}
	return result{stdout: r.stdout, stderr: strings.ReplaceAll(screen.String(), "\r", ""), code: r.code}
}

func (e *env) exportTo(name string) string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), name)
	e.ok("log", "export", path)
	return path
}

// Issue 10: destructive commands in a script (no terminal) without --yes refuse with exit
// 2 and change nothing; they never read stdin, whatever it holds.
func TestDestructiveCommandsNeedYes(t *testing.T) {
	e := cluster2(t)
	e.ok("pool", "create", "spare", "10.9.0.0/24", noSkipNB)
	exp := e.exportTo("export.jsonl")
	e.ok("log", "snapshot")
	arch := filepath.Join(t.TempDir(), "archive.jsonl")
	before := e.ok("events", "-o", "json")

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err = w.WriteString("y\ny\ny\ny\ny\ny\ny\ny\ny\ny\n"); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	ptmx, tty, err := pty.Open() // a terminal on stdin but not on stderr: the question would not show
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pool", "delete", "spare"}, `pool delete would delete pool "spare": pass --yes (-y) to confirm`},
		{[]string{"node", "reclaim", "n1"}, `node reclaim would reclaim node "n1"`},
		{[]string{"address", "release", e.c1.Addrs[0].String(), "--reason", "x", "--force"}, "address release would release address " + e.c1.Addrs[0].String()},
		{[]string{"log", "import", "--force", exp}, "log import would replace the Coil log etcd holds (--force): pass --yes (-y)"},
		{[]string{"log", "archive", "--before", "2100-01-01T00:00:00Z", "--to", arch}, "log archive would delete the archived events from etcd: pass --yes"},
	} {
		for name, stdin := range map[string]io.Reader{"no stdin": nil, "stdin a string": strings.NewReader("y\n"), "stdin a pipe": r, "stdin a terminal": tty} {
			t.Run(tc.args[0]+" "+tc.args[1]+", "+name, func(t *testing.T) {
				var stderr bytes.Buffer
				out, code := e.runIO(stdin, &stderr, tc.args...)
				checkFail(t, result{stdout: out, stderr: stderr.String(), code: code}, cli.ExitUsage, tc.args, tc.want,
					"coilctl asks only when stdin and stderr are a terminal")
			})
		}
	}
	if rest, _ := io.ReadAll(r); len(rest) != 20 {
		t.Errorf("the commands read stdin: %q left of 20 bytes", rest)
	}
	if after := e.ok("events", "-o", "json"); after != before {
		t.Fatal("a refused command changed the log")
	}
	if _, err := os.Stat(arch); !os.IsNotExist(err) {
		t.Fatalf("a refused archive wrote %s: %v", arch, err)
	}
	// Not destructive, so no --yes needed: a plain import is refused for what it is.
	e.fails(cli.ExitRefused, []string{"log", "import", exp}, "already holds a Coil log")
}

// On a terminal they show what they will do and ask; only y/yes proceeds. What they
// refuse anyway (a pool in use, a live node) is refused before asking.
func TestDestructiveCommandsConfirmOnTerminal(t *testing.T) {
	e := cluster2(t)
	e.ok("pool", "create", "spare", "10.9.0.0/24", "--layout", "block-streams", noSkipNB) // as cluster2's pools

	asked := func(t *testing.T, r result, code int, want ...string) {
		t.Helper()
		t.Logf("terminal:\n%s", r.stderr)
		if r.code != code || !strings.Contains(r.stderr, prompt) {
			t.Fatalf("exit %d (want %d), terminal:\n%s", r.code, code, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("terminal lacks %q:\n%s", w, r.stderr)
			}
		}
	}
	notAsked := func(t *testing.T, r result, code int, want string) {
		t.Helper()
		if r.code != code || strings.Contains(r.stderr, prompt) || !strings.Contains(r.stderr, want) {
			t.Fatalf("exit %d (want %d, no question, %q), terminal:\n%s", r.code, code, want, r.stderr)
		}
	}

	// pool delete
	r := e.runTTY("n", "pool", "delete", "spare")
	asked(t, r, cli.ExitRefused, `Delete pool "spare": 10.9.0.0/24, 8 blocks of 32 addresses, none in use.`+"\n"+prompt+"n\n",
		`coilctl: not confirmed: pool "spare" was not deleted`)
	if !strings.Contains(e.ok("pool", "list"), "spare") {
		t.Fatal("pool deleted though the answer was n")
	}
	notAsked(t, e.runTTY("y", "pool", "delete", "default"), cli.ExitRefused, `pool "default": 2 blocks are in use (n1: 1, n2: 1)`)
	notAsked(t, e.runTTY("y", "pool", "delete", "nope"), cli.ExitNotFound, `pool "nope" not found`)
	r = e.runTTY("Yes", "pool", "delete", "spare")
	asked(t, r, cli.ExitOK)
	if r.stdout != "pool \"spare\" deleted\n" || strings.Contains(e.ok("pool", "list"), "spare") {
		t.Fatalf("pool delete after yes: %q", r.stdout)
	}

	// node reclaim
	notAsked(t, e.runTTY("y", "node", "reclaim", "n1"), cli.ExitRefused, `node "n1" still holds its lease (/coil/alive/n1)`)
	e.kill1()
	r = e.runTTY("\x04", "node", "reclaim", "n1") // Ctrl-D
	asked(t, r, cli.ExitRefused, `Reclaim node "n1": release its 2 addresses, take back its 1 blocks (default: 1) and retire it.`,
		`coilctl: not confirmed: node "n1" was not reclaimed`)
	if out := e.ok("address", "list", "--node", "n1"); len(lines(out)) != 3 {
		t.Fatalf("n1's addresses after Ctrl-D:\n%s", out)
	}
	r = e.runTTY("y", "node", "reclaim", "n1", "--reason", "gone")
	asked(t, r, cli.ExitOK)
	if r.stdout != "node \"n1\" reclaimed: 2 addresses released, 1 blocks reclaimed (default: 1)\n" {
		t.Fatalf("reclaim after y: %q", r.stdout)
	}

	// log archive: asked before the file is written
	e.ok("log", "snapshot")
	arch := filepath.Join(t.TempDir(), "archive.jsonl")
	r = e.runTTY("", "log", "archive", "--before", "2100-01-01T00:00:00Z", "--to", arch)
	// cluster, node/n1, node/n2 and the three blocks' streams (pools have block streams,
	// so the cluster stream starts with ClusterLevelRaised)
	asked(t, r, cli.ExitRefused, "Archive 25 events of 6 streams", "to "+arch+", then delete them from etcd",
		"coilctl: not confirmed: nothing archived or deleted")
	if _, err := os.Stat(arch); !os.IsNotExist(err) {
		t.Fatalf("declined archive wrote %s: %v", arch, err)
	}
	r = e.runTTY("y", "log", "archive", "--before", "2100-01-01T00:00:00Z", "--to", arch)
	asked(t, r, cli.ExitOK)
	if !strings.Contains(r.stdout, "archived 25 events of 6 streams") {
		t.Fatalf("archive after y: %q", r.stdout)
	}

	// log import --force: asked once the file's header is read, nothing deleted before
	exp := e.exportTo("export.jsonl")
	e.kill2()
	e.alloc2("n3", "late") // a node whose coild stopped after the export
	before := e.ok("-o", "json", "address", "list")
	r = e.runTTY("no", "log", "import", "--force", exp)
	asked(t, r, cli.ExitRefused, "etcd holds a Coil log under /coil/: ", "--force deletes it, and its attachment index, and loads "+exp,
		"Addresses assigned since that export are forgotten.", "coilctl: not confirmed: the log etcd holds was kept; nothing imported")
	if e.ok("-o", "json", "address", "list") != before || !strings.Contains(before, "late") {
		t.Fatal("a declined import changed the log")
	}
	r = e.runTTY("y", "log", "import", "--force", exp)
	asked(t, r, cli.ExitOK)
	if !strings.Contains(r.stdout, "imported") || strings.Contains(e.ok("address", "list"), "late") {
		t.Fatalf("import after y: %q", r.stdout)
	}
}

// alloc2 allocates one address on a node started for it and stops that node at once
// (its lease revoked): a node whose coild is gone.
func (e *env) alloc2(node, id string) {
	e.t.Helper()
	n, kill := e.startNode(node)
	e.alloc(n, id, "default", id)
	kill()
}

// Issue 10: `log import --force` against a live cluster is refused, naming the live
// nodes, unless each is named with --ignore-live-nodes.
func TestImportRefusesLiveNodes(t *testing.T) {
	e := cluster2(t)
	exp := e.exportTo("export.jsonl")
	r := e.fails(cli.ExitRefused, []string{"log", "import", "--force", "--yes", exp},
		"2 nodes hold their liveness key under /coil/alive/: n1 (lease ", "s left), n2 (lease ",
		"stop every coild first", "--ignore-live-nodes")
	t.Log(r.stderr)
	r = e.fails(cli.ExitRefused, []string{"log", "import", "--force", "--yes", "--ignore-live-nodes", "n1", exp}, "1 nodes hold", "n2 (lease ")
	if strings.Contains(r.stderr, "n1 (") {
		t.Fatalf("n1 named though ignored: %q", r.stderr)
	}
	e.fails(cli.ExitUsage, []string{"log", "import", "--force", "--yes", "--ignore-live-nodes", "N_1", exp}, `--ignore-live-nodes: name "N_1" is invalid`)
	// The plain import into an etcd holding a log says so first (it needs --force anyway).
	e.fails(cli.ExitRefused, []string{"log", "import", exp}, "already holds a Coil log")
	out := e.ok("log", "import", "--force", "--yes", "--ignore-live-nodes", "n1,n2", exp)
	if !strings.Contains(out, "imported 17 events of 6 streams") { // cluster (with ClusterLevelRaised), 2 nodes, 3 block streams
		t.Fatalf("import with every live node named: %q", out)
	}
}
