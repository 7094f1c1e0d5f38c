package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
)

// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const StopTimeout = 5 * time.Second

// Process is a long-running process the lab started inside a node namespace.
type Process struct {
	Name    string // command name
	LogPath string // stdout and stderr go here

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// StartProcess starts `ip netns exec <ns> name args...` in the background (ip execs the
// command, so the PID is the command's own). Its output goes to a log file in the node's
// Dir (Process.LogPath). The process lives until Stop or Close, not until ctx ends (ctx only
// aborts the start); it is killed by the kernel if the lab's process dies.
func (n *Node) StartProcess(ctx context.Context, name string, args ...string) (*Process, error) {
	return n.lab.startProcess(ctx, n.NetNS, n.Dir, name, args...)
}

// StartCommand is StartProcess for a command line that enters the node's namespaces by
// itself (e.g. `nsenter --net=... --mount=...`): argv runs as given, its output goes to
// "<logName>-*.log" in the node's Dir, and it is tracked, stopped and killed with the lab
// like StartProcess's. Process.Name is logName.
func (n *Node) StartCommand(ctx context.Context, logName string, argv []string) (*Process, error) {
	return n.lab.startCommand(ctx, n.NetNS, n.Dir, logName, argv)
}

// startProcess starts `ip netns exec <ns> name args...` with its log in dir.
func (l *Lab) startProcess(ctx context.Context, netns, dir, name string, args ...string) (*Process, error) {
	return l.startCommand(ctx, netns, dir, filepath.Base(name), append([]string{"ip", "netns", "exec", netns, name}, args...))
}

// startCommand starts argv with its output in "<logName>-*.log" in dir and tracks it;
// netns names the namespace it enters, for errors.
func (l *Lab) startCommand(ctx context.Context, netns, dir, logName string, argv []string) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, errors.Wrap(err, "lab: start process")
	}
	if len(argv) == 0 {
		return nil, errors.Wrap(ErrConfig, "lab: empty command line")
	}
	f, err := os.CreateTemp(dir, logName+"-*.log")
	if err != nil {
		return nil, errors.Wrap(err, "lab: process log")
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // a terminal's Ctrl-C reaches the lab, which stops it in order
		Pdeathsig: syscall.SIGKILL, // and dies with the lab if the lab is killed
	}
	p := &Process{Name: logName, LogPath: f.Name(), cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, errors.Wrapf(err, "lab: start %s in %s", argv[0], netns)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := l.track(p); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited tells whether the process has exited.
func (p *Process) Exited() bool { return isDone(p.done) }

// Err is the exit status once Done is closed (nil before).
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process (by PID), then SIGKILL after StopTimeout, and waits for
// it to exit. Stopping an exited process is not an error; Stop is idempotent.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused (SIGSTOP) process must run to exit
		t := time.NewTimer(StopTimeout)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				p.stopErr = errors.Wrapf(err, "lab: kill %s (pid %d)", p.Name, p.PID())
			}
			<-p.done
		}
	})
	return p.stopErr
}

// Kill kills the process with SIGKILL (by PID), as a crash would end it, and waits until
// it has exited. Killing an exited process is not an error.
func (p *Process) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return errors.Wrapf(err, "lab: kill %s (pid %d)", p.Name, p.PID())
	}
	<-p.done
	return nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Tail returns the last n lines of a log file, or a note saying why it cannot be read
// (for error messages).
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
