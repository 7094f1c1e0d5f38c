package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/safetext"
)

// Exit codes. They are a contract with scripts: see docs/coilctl.md.
const (
	ExitOK          = 0 // success
	ExitFailure     = 1 // any other failure
	ExitUsage       = 2 // bad flags or arguments
	ExitNotFound    = 3 // the pool, address or node named does not exist (or the address is free)
	ExitRefused     = 4 // refused: conflict, in use, overlap, already exists, node still alive
	ExitUnreachable = 5 // etcd could not be reached
	ExitFindings    = 6 // ipam check found disagreements (its report is on stdout)
)

// Sentinel errors of the command line.
var (
	// ErrUsage: bad flags or arguments (exit 2).
	ErrUsage = errors.New("cli: usage error")
	// ErrNotFound: the thing named does not exist (exit 3).
	ErrNotFound = errors.New("cli: not found")
	// ErrRefused: the operation is refused in the current state (exit 4).
	ErrRefused = errors.New("cli: refused")
)

// Env is what a run of coilctl sees of the outside world.
type Env struct {
	Stdout, Stderr io.Writer
	// Stdin is where destructive commands read the operator's answer when Stdin and Stderr
	// are both terminals (see confirm); nil means no input, so they need --yes.
	Stdin io.Reader
	// Getenv reads environment variables (USER for the actor); nil means os.Getenv.
	Getenv func(string) string
	// Clock stamps the events written; nil means the system clock.
	Clock events.Clock
}

// options are the global flags, filled by cobra.
type options struct {
	etcd    etcdclient.Flags
	timeout time.Duration
	output  string
}

// app is one run of coilctl: the environment, the global flags and, once connected,
// the etcd client and the log.
type app struct {
	env  Env
	opts options

	cli  *clientv3.Client
	log  events.Log
	etcd *events.EtcdLog // the log under a.log, for its etcd-only queries (LiveNodes)
}

// Main runs coilctl with args (without the program name), writing results to env.Stdout
// and errors to env.Stderr as "coilctl: <message>", and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Clock == nil {
		env.Clock = events.SystemClock{}
	}
	a := &app{env: env}
	defer a.close()
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	msg := errMessage(err)
	if code == ExitUsage && cmd != nil {
		msg += fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
	}
	fmt.Fprintf(env.Stderr, "coilctl: %s\n", safetext.Clean(msg))
	return code
}

// runError marks an error returned by a command's RunE; anything else that reaches Main
// comes from cobra itself (unknown command or flag, wrong number of arguments): usage.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

func errMessage(err error) string {
	var re *runError
	if errors.As(err, &re) {
		err = re.err
	}
	return err.Error()
}

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	var re *runError
	if !errors.As(err, &re) {
		return ExitUsage
	}
	switch {
	case errors.Is(err, ErrUsage), errors.Is(err, allocator.ErrInvalidPool), errors.Is(err, allocator.ErrInvalidRange), errors.Is(err, allocator.ErrInvalidSelector),
		errors.Is(err, etcdclient.ErrInvalidEndpoint), errors.Is(err, events.ErrInvalidStream):
		return ExitUsage
	case errors.Is(err, etcdclient.ErrUnreachable), errors.Is(err, events.ErrUnavailable):
		return ExitUnreachable
	case errors.Is(err, ErrFindings):
		return ExitFindings
	case errors.Is(err, ErrNotFound), errors.Is(err, allocator.ErrPoolNotFound), errors.Is(err, allocator.ErrNotHeld):
		return ExitNotFound
	case errors.Is(err, ErrRefused), errors.Is(err, ErrNotConfirmed), errors.Is(err, allocator.ErrPoolExists), errors.Is(err, allocator.ErrOverlap),
		errors.Is(err, allocator.ErrPoolInUse), errors.Is(err, allocator.ErrNodeAlive),
		errors.Is(err, allocator.ErrAddressInUse), errors.Is(err, allocator.ErrReservation),
		errors.Is(err, allocator.ErrExhausted), errors.Is(err, allocator.ErrRetries), errors.Is(err, allocator.ErrLevel),
		errors.Is(err, events.ErrConflict), errors.Is(err, events.ErrFenced), errors.Is(err, events.ErrPermissionDenied):
		return ExitRefused
	}
	return ExitFailure
}

// usagef returns a usage error (exit 2).
func usagef(format string, args ...any) error {
	return errors.Mark(errors.Newf(format, args...), ErrUsage)
}

// parseAddrArg parses an ADDRESS argument: an IP address without a zone, an IPv4-mapped
// IPv6 address taken as its IPv4 address.
func parseAddrArg(arg string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(arg)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, usagef("%q is not an IP address (like 10.64.0.5 or fd00::5)", arg)
	}
	return addr.Unmap(), nil
}

// run adapts a command body to cobra's RunE, marking its errors as the command's own.
func (a *app) run(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := fn(cmd, args); err != nil {
			return &runError{err: err}
		}
		return nil
	}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "coilctl",
		Short: "Operate Coil: pools, blocks, addresses, nodes and the event log",
		Long: `coilctl operates Coil, the event-sourced BGP network plugin.

It reads Coil's event log from etcd (every listing is replayed at one etcd revision)
and appends operator events (pool definitions, node reclaim) to it.

Destructive commands (pool delete, node reclaim, address release, log import --force,
log archive)
ask for confirmation on a terminal; in scripts pass --yes (without a terminal and
without --yes they refuse: exit 2).

Exit codes: 0 ok, 1 failure, 2 usage error, 3 not found, 4 refused (conflict,
in use, overlap, exists, node alive, not confirmed), 5 etcd unreachable, 6 ipam check
found problems.`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: a.run(func(*cobra.Command, []string) error { return a.checkGlobal() }),
	}
	f := root.PersistentFlags()
	a.opts.etcd.Register(f)
	f.DurationVar(&a.opts.timeout, "timeout", 5*time.Second, "longest wait for etcd: to connect, and for each request")
	f.StringVarP(&a.opts.output, "output", "o", "table", "output format: table, json or yaml")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })

	root.AddCommand(a.poolCommand(), a.eventsCommand(), a.addressCommand(), a.blockCommand(), a.nodeCommand(),
		a.historyCommand(), a.stateCommand(), a.diffCommand(), a.logCommand(), a.etcdCommand(), a.ipamCommand(), a.clusterCommand())
	return root
}

// group is a command that only holds subcommands: run without one it is a usage error.
func (a *app) group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			names := make([]string, 0, len(subs))
			for _, s := range subs {
				names = append(names, s.Name())
			}
			if len(args) > 0 {
				return usagef("unknown command %q for %q (one of: %s)", args[0], cmd.CommandPath(), strings.Join(names, ", "))
			}
			return usagef("%q needs a subcommand (one of: %s)", cmd.CommandPath(), strings.Join(names, ", "))
		}),
	}
	c.AddCommand(subs...)
	return c
}

// checkGlobal validates the global flags before any command runs.
func (a *app) checkGlobal() error {
	switch a.opts.output {
	case "table", "json", "yaml":
	default:
		return usagef("--output %q: want table, json or yaml", a.opts.output)
	}
	if a.opts.timeout <= 0 {
		return usagef("--timeout %s: must be positive", a.opts.timeout)
	}
	if _, err := etcdclient.ParseEndpoints(a.opts.etcd.Endpoints); err != nil {
		return errors.Mark(err, ErrUsage)
	}
	if !strings.HasPrefix(a.opts.etcd.Prefix, "/") {
		return usagef("--etcd-prefix %q: must start with /", a.opts.etcd.Prefix)
	}
	return nil
}

// connect opens the etcd client and the log (once per run).
func (a *app) connect() error {
	if a.log != nil {
		return nil
	}
	ecfg, err := a.opts.etcd.Config(a.opts.timeout)
	if err != nil {
		return errors.Mark(err, ErrUsage)
	}
	cli, err := etcdclient.New(ecfg)
	if err != nil {
		if errors.Is(err, etcdclient.ErrTLS) {
			return errors.Mark(err, ErrUsage)
		}
		return err
	}
	a.cli = cli
	a.etcd = events.NewEtcdLog(cli, events.EtcdConfig{Prefix: a.opts.etcd.Prefix})
	a.log = &timeoutLog{Log: a.etcd, timeout: a.opts.timeout}
	return nil
}

func (a *app) close() {
	if a.log != nil {
		_ = a.log.Close()
	}
	if a.cli != nil {
		_ = a.cli.Close()
	}
}

// actor is who the events written by this run are attributed to.
func (a *app) actor() string {
	if u := a.env.Getenv("USER"); u != "" {
		return "coilctl:" + u
	}
	return "coilctl:" + strconv.Itoa(os.Getuid())
}

func (a *app) admin() *allocator.Admin {
	return &allocator.Admin{Log: a.log, Live: liveTimeout{a.etcd, a.opts.timeout}, Clock: a.env.Clock, Actor: a.actor()}
}

// requestCtx bounds one etcd request by --timeout.
func (a *app) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.opts.timeout)
}

// timeoutLog bounds every call on the log by timeout, so a command never hangs on an
// etcd that went away after connecting.
type timeoutLog struct {
	events.Log
	timeout time.Duration
}

func (l *timeoutLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Log.Append(ctx, req)
}

func (l *timeoutLog) Head(ctx context.Context, s events.Stream) (events.Version, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Log.Head(ctx, s)
}

func (l *timeoutLog) Read(ctx context.Context, s events.Stream, from uint64, rev int64, fn func(*events.Event) error) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Log.Read(ctx, s, from, rev, fn)
}

func (l *timeoutLog) Streams(ctx context.Context, prefix string, rev int64) (map[events.Stream]events.Version, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Log.Streams(ctx, prefix, rev)
}

// liveTimeout bounds LiveNodes by timeout, as timeoutLog does the log's calls.
type liveTimeout struct {
	l       *events.EtcdLog
	timeout time.Duration
}

func (l liveTimeout) LiveNodes(ctx context.Context, ttl bool) ([]events.LiveNode, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.l.LiveNodes(ctx, ttl)
}
