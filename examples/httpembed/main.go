// Command httpembed embeds a node in an existing net/http service. A
// protoactor actor serves node service 10 (node.HandleActor); the HTTP
// handler forwards each request to it through an in-process client, the
// same way any other process on the host would call it.
//
//	go run ./examples/httpembed                  # then: curl 'http://127.0.0.1:8080/hello?name=you'
//	go run ./examples/httpembed -http 127.0.0.1:0 -once   # serve one request of its own and exit
//	switchboard call --socket S 10 1 you   # the node's service, from another process (switchboard: go build -o switchboard ./cmd/node)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard"
)

const (
	greetService = 10
	greetCommand = 1
)

// greeter is the actor behind the service: its state (a count) needs no
// lock, since the actor takes one message at a time.
type greeter struct{ count int }

func (g *greeter) Receive(c actor.Context) {
	if r, ok := c.Message().(*switchboard.ActorRequest); ok {
		if r.Command != greetCommand {
			r.Respond(nil, switchboard.ErrUnknownCommand)
			return
		}
		g.count++
		r.Respond(fmt.Appendf(nil, "hello, %s (greeting %d, from actor %s)", r.Payload, g.count, c.Self().Id), nil)
	}
}

func main() {
	socket := flag.String("socket", filepath.Join(os.TempDir(), fmt.Sprintf("switchboard-httpembed-%d", os.Geteuid()), "node.sock"), "where the embedded node listens")
	addr := flag.String("http", "127.0.0.1:8080", "the HTTP service's address")
	once := flag.Bool("once", false, "make one HTTP request to itself, print the answer and exit")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *socket, *addr, *once); err != nil {
		fmt.Fprintln(os.Stderr, "httpembed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket, addr string, once bool) error {
	node, err := switchboard.NewNode(switchboard.WithSocket(socket))
	if err != nil {
		return err
	}
	if _, err := node.HandleActor(greetService, actor.PropsFromProducer(func() actor.Actor { return &greeter{} })); err != nil {
		node.Close()
		return err
	}
	if err := node.Listen(); err != nil {
		node.Close()
		return err
	}
	served := make(chan error, 1)
	go func() { served <- node.Serve(ctx) }()
	defer func() { node.Close(); <-served }()

	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("httpembed"))
	if err != nil {
		return err
	}
	defer c.Close()
	mux := http.NewServeMux() // the service's own mux, not http.DefaultServeMux
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		reply, err := c.Call(r.Context(), greetService, greetCommand, []byte(r.URL.Query().Get("name")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%s\n", reply)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-httpDone
	}()
	url := fmt.Sprintf("http://%s/hello?name=you", ln.Addr())
	fmt.Printf("HTTP on %s, node on %s (service %d)\n", url, socket, greetService)
	if !once {
		select {
		case <-ctx.Done():
			return nil
		case err := <-httpDone:
			httpDone <- err // for the deferred Shutdown
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	fmt.Printf("GET %s: %s %s", url, resp.Status, body)
	return err
}
