package cli

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// ErrNotConfirmed: a destructive command was not confirmed. Without a terminal to ask on
// and without --yes it is also a usage error (exit 2); an operator who answers anything
// but y/yes gets exit 4 (refused).
var ErrNotConfirmed = errors.New("cli: not confirmed")

// Destructive commands (pool delete, node reclaim, log import --force, log archive; the
// coming address release too) follow one pattern:
//
//  1. yesFlag adds --yes/-y;
//  2. needConfirm, before the command does anything, refuses (exit 2) when there is no
//     --yes and no terminal to ask on: a script never hangs on a prompt, and never
//     destroys without saying so;
//  3. once the command knows what it will do (and has refused what it must refuse, so the
//     operator is never asked about something that cannot happen), confirm shows it on
//     the terminal and asks y/N.

// yesFlag adds --yes (-y) to a destructive command.
func yesFlag(c *cobra.Command, yes *bool) {
	c.Flags().BoolVarP(yes, "yes", "y", false,
		"do it without asking (needed when stdin and stderr are not a terminal, e.g. in scripts)")
}

// interactive reports whether coilctl can ask: stdin (for the answer) and stderr (for
// the question) are both terminals.
func (a *app) interactive() bool {
	in, ok := a.env.Stdin.(*os.File)
	if !ok {
		return false
	}
	out, ok := a.env.Stderr.(*os.File)
	return ok && term.IsTerminal(int(in.Fd())) && term.IsTerminal(int(out.Fd()))
}

// needConfirm refuses (exit 2) a destructive command that has no --yes and cannot ask.
// what says what the command would do ("delete pool \"x\"").
func (a *app) needConfirm(cmd *cobra.Command, yes bool, what string) error {
	if yes || a.interactive() {
		return nil
	}
	return errors.Mark(errors.Mark(errors.Newf(
		"%s would %s: pass --yes (-y) to confirm; coilctl asks only when stdin and stderr are a terminal",
		strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" "), what), ErrNotConfirmed), ErrUsage)
}

// confirm shows plan on the terminal (stderr) and asks "Proceed? [y/N]". Only y or yes
// (any case) proceeds; anything else, or end of input, is ErrNotConfirmed (exit 4) naming
// what was not done. With yes it does not ask. A cancelled ctx (Ctrl-C) stops the wait.
func (a *app) confirm(ctx context.Context, yes bool, plan, notDone string) error {
	if yes {
		return nil
	}
	if !a.interactive() { // needConfirm let it through only on a terminal
		return errors.Mark(errors.Newf("not confirmed: %s (no terminal to ask on; pass --yes)", notDone), ErrUsage)
	}
	if _, err := fmt.Fprintf(a.env.Stderr, "%s\nProceed? [y/N] ", strings.TrimRight(plan, "\n")); err != nil {
		return errors.Wrap(err, "ask for confirmation")
	}
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(a.env.Stdin).ReadString('\n')
		answer <- line
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(a.env.Stderr)
		return errors.Wrapf(ctx.Err(), "not confirmed: %s", notDone)
	case line := <-answer:
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "y", "yes":
			return nil
		}
		if !strings.HasSuffix(line, "\n") {
			fmt.Fprintln(a.env.Stderr) // end of input: end the prompt's line
		}
		return errors.Mark(errors.Newf("not confirmed: %s", notDone), ErrNotConfirmed)
	}
}
