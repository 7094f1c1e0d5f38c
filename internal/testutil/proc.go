package testutil

import (
	"bytes"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer that a subprocess or a server's goroutines write while the
// test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ProcStopTimeout is how long a Proc has to exit after SIGTERM before it gets SIGKILL.
const ProcStopTimeout = 20 * time.Second

// procLogTail bounds the output a failed test logs of a Proc.
const procLogTail = 256 << 10

// Proc is a subprocess a test started: Cmd with its stdout and stderr in Out. Done is
// closed when it has exited; Err is then what Wait returned.
type Proc struct {
	Cmd   *exec.Cmd
	Out   *Buffer
	label string
	done  chan struct{}
	err   error
}

// StartProc starts cmd with its output in Out and fails the test if it cannot. When the
// test ends a Proc still running gets SIGTERM (by PID; SIGKILL after ProcStopTimeout)
// and must exit cleanly; when the test failed, the output (its last 256 KiB) is logged
// under label.
func StartProc(t testing.TB, label string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Out: &Buffer{}, label: label, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			out := p.Out.String()
			if len(out) > procLogTail {
				out = out[len(out)-procLogTail:]
			}
			t.Logf("%s output:\n%s", label, out)
		}
	})
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is what Wait returned; only meaningful once Done is closed.
func (p *Proc) Err() error { return p.err }

// Stop sends SIGTERM to a process still running (by PID) and waits; it is an error of the
// test if the process does not exit cleanly, or needs SIGKILL after ProcStopTimeout. A
// process that has exited already is left as it is.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", p.label, p.err)
		}
	case <-time.After(ProcStopTimeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
		t.Errorf("%s ignored SIGTERM for %s", p.label, ProcStopTimeout)
	}
}

// Exited waits up to within for the process to exit and returns its exit code (-1 if it
// still runs, -2 if a signal killed it).
func (p *Proc) Exited(within time.Duration) int {
	select {
	case <-p.done:
	case <-time.After(within):
		return -1
	}
	if p.KilledBy() != 0 {
		return -2
	}
	return p.Cmd.ProcessState.ExitCode()
}

// KilledBy is the signal that ended the process, 0 if it exited by itself (or still runs).
func (p *Proc) KilledBy() syscall.Signal {
	select {
	case <-p.done:
	default:
		return 0
	}
	ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0
	}
	return ws.Signal()
}
