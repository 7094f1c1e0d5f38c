// Command coil-testapp is the program of the coil-testapp image, Coil's test workload.
// It uses only the standard library and runs in an image with nothing else.
//
//	coil-testapp [serve] [-listen :80]
//	    HTTP server. GET / answers 200 with JSON: the host name (the pod name), the
//	    addresses of the pod's interfaces (loopback excluded) and the caller's address.
//	    GET /healthz answers "ok". SIGTERM or SIGINT: graceful stop, exit 0.
//	coil-testapp probe [-timeout 2s] [-retry-for 0s] [-o text|json] TARGET...
//	    Connects to each TARGET and reports, one line each. HOST:PORT is a TCP connect;
//	    http://HOST:PORT/PATH a GET that must answer 200 (a coil-testapp's reply is
//	    decoded: who answered, from which addresses). -retry-for keeps retrying a failing
//	    target until that much time has passed. Exit 0: every target answered; 1: some
//	    did not; 2: bad usage.
//
// Called by another name (the image links them in /bin), or with that name as the first
// argument, it acts as that command, enough for what critest and e2e tests run in
// containers: cat, echo [-n], hostname, ls [-a|-A], sleep SECONDS|infinity, top (waits for
// SIGTERM or SIGINT, exit 0), true. There is no shell.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var applets = map[string]func(args []string) int{
	"cat":      cat,
	"echo":     echo,
	"hostname": hostname,
	"ls":       ls,
	"sleep":    sleep,
	"top":      top,
	"true":     func([]string) int { return 0 },
	"serve":    serve,
	"probe":    probe,
}

func main() {
	os.Exit(dispatch(os.Args))
}

func dispatch(argv []string) int {
	name := filepath.Base(argv[0])
	args := argv[1:]
	if _, ok := applets[name]; !ok || name == "serve" || name == "probe" {
		name = "serve"
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			name, args = args[0], args[1:]
		}
	}
	f, ok := applets[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "coil-testapp: unknown command %q (serve, probe, or one of cat echo hostname ls sleep top true)\n", name)
		return 2
	}
	return f(args)
}

// ---- serve ----

// Reply is what GET / answers.
type Reply struct {
	Hostname string   `json:"hostname"`
	Addrs    []string `json:"addrs"`
	Remote   string   `json:"remote"`
}

func podAddrs() []string {
	var out []string
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, p.Addr().String())
	}
	sort.Strings(out)
	return out
}

func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":80", "address to listen on")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "coil-testapp: %v\n", err)
		return 1
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Reply{Hostname: host, Addrs: podAddrs(), Remote: r.RemoteAddr})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "coil-testapp: serving on %s (hostname %s, addresses %v)\n", ln.Addr(), host, podAddrs())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "coil-testapp: %v\n", err)
		return 1
	}
	return 0
}

// ---- probe ----

// Result is one probed target (a line of `probe -o json`).
type Result struct {
	Target   string   `json:"target"`
	OK       bool     `json:"ok"`
	Millis   float64  `json:"ms"`
	Tries    int      `json:"tries"`
	Error    string   `json:"error,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	Addrs    []string `json:"addrs,omitempty"`
}

func probe(args []string) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "time allowed for one try of one target")
	retryFor := fs.Duration("retry-for", 0, "keep retrying a failing target until this much time has passed")
	output := fs.String("o", "text", "output: text or json (one object per line)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 || (*output != "text" && *output != "json") {
		fmt.Fprintln(os.Stderr, "usage: coil-testapp probe [-timeout 2s] [-retry-for 0s] [-o text|json] HOST:PORT|http://HOST:PORT/PATH...")
		return 2
	}
	results := make([]Result, fs.NArg())
	done := make(chan int)
	for i, target := range fs.Args() {
		go func() {
			results[i] = probeOne(target, *timeout, *retryFor)
			done <- i
		}()
	}
	for range fs.NArg() {
		<-done
	}
	code := 0
	w := bufio.NewWriter(os.Stdout)
	defer func() { _ = w.Flush() }()
	for _, r := range results {
		if !r.OK {
			code = 1
		}
		if *output == "json" {
			b, _ := json.Marshal(r)
			_, _ = w.Write(append(b, '\n'))
			continue
		}
		if r.OK {
			fmt.Fprintf(w, "ok    %s %.1fms", r.Target, r.Millis)
			if r.Hostname != "" {
				fmt.Fprintf(w, " %s %v", r.Hostname, r.Addrs)
			}
			fmt.Fprintln(w)
		} else {
			fmt.Fprintf(w, "FAIL  %s after %d tries: %s\n", r.Target, r.Tries, r.Error)
		}
	}
	return code
}

func probeOne(target string, timeout, retryFor time.Duration) Result {
	deadline := time.Now().Add(retryFor)
	r := Result{Target: target}
	for {
		r.Tries++
		start := time.Now()
		err := try(target, timeout, &r)
		r.Millis = float64(time.Since(start).Microseconds()) / 1000
		if err == nil {
			r.OK, r.Error = true, ""
			return r
		}
		r.Error = err.Error()
		if time.Now().Add(200 * time.Millisecond).After(deadline) {
			return r
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func try(target string, timeout time.Duration, r *Result) error {
	if !strings.Contains(target, "://") {
		c, err := net.DialTimeout("tcp", target, timeout)
		if err != nil {
			return err
		}
		return c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, http.NoBody)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	var reply Reply
	if json.Unmarshal(body, &reply) == nil {
		r.Hostname, r.Addrs = reply.Hostname, reply.Addrs
	}
	return nil
}

// ---- applets ----

func cat(args []string) int {
	if len(args) == 0 {
		args = []string{"-"}
	}
	code := 0
	for _, a := range args {
		var err error
		if a == "-" {
			_, err = io.Copy(os.Stdout, os.Stdin)
		} else {
			var f *os.File
			if f, err = os.Open(a); err == nil {
				_, err = io.Copy(os.Stdout, f)
				_ = f.Close()
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "cat: %v\n", err)
			code = 1
		}
	}
	return code
}

func echo(args []string) int {
	nl := "\n"
	if len(args) > 0 && args[0] == "-n" {
		nl, args = "", args[1:]
	}
	fmt.Print(strings.Join(args, " ") + nl)
	return 0
}

func hostname(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "hostname: setting the host name is not supported")
		return 1
	}
	h, err := os.Hostname()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hostname: %v\n", err)
		return 1
	}
	fmt.Println(h)
	return 0
}

func ls(args []string) int {
	all, almost := false, false
	var paths []string
	for _, a := range args {
		switch a {
		case "-a":
			all = true
		case "-A":
			almost = true
		default:
			if strings.HasPrefix(a, "-") {
				fmt.Fprintf(os.Stderr, "ls: unsupported option %s (-a and -A are)\n", a)
				return 2
			}
			paths = append(paths, a)
		}
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	code := 0
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ls: %v\n", err)
			code = 2
			continue
		}
		if !st.IsDir() {
			fmt.Println(p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "ls: %v\n", err)
			code = 2
			continue
		}
		var names []string
		if all {
			names = append(names, ".", "..")
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") && !all && !almost {
				continue
			}
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Println(n)
		}
	}
	return code
}

func sleep(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: sleep SECONDS|infinity")
		return 2
	}
	if args[0] == "infinity" {
		select {}
	}
	s, err := strconv.ParseFloat(strings.TrimSuffix(args[0], "s"), 64)
	if err != nil || s < 0 {
		fmt.Fprintf(os.Stderr, "sleep: invalid time %q\n", args[0])
		return 2
	}
	time.Sleep(time.Duration(s * float64(time.Second)))
	return 0
}

// top stands in for the `top` critest runs as a long-lived container command: it does
// nothing until SIGTERM or SIGINT, then exits 0. The line it prints comes once the
// signals are handled.
func top([]string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	fmt.Fprintln(os.Stderr, "top: coil-testapp stand-in, waiting for SIGTERM or SIGINT")
	<-sigs
	return 0
}
