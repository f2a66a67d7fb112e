// fileserver: Go's own net/http file server over a GOPROXY directory tree, for
// scripts/bench: how fast the go command downloads a warm cache over plain HTTP when the
// server costs next to nothing. It listens on 127.0.0.1:-port until killed, and prints
// "fileserver: ready" once it does.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1")
	root := flag.String("root", "", "the directory to serve")
	flag.Parse()
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fileserver:", err)
		os.Exit(1)
	}
	fmt.Println("fileserver: ready")
	err = http.Serve(listener, http.FileServer(http.Dir(*root)))
	fmt.Fprintln(os.Stderr, "fileserver:", err)
	os.Exit(1)
}
