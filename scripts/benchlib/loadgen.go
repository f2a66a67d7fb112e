// loadgen: a small, bounded HTTP load client for scripts/bench.
//
// It sends GETs for the given paths, round robin, over -conns keep-alive connections,
// until -duration passes or -max requests are done, then prints one JSON object:
// requests, errors, bytes, seconds, rps, mb_per_s. With -proxy it goes through an
// HTTPS proxy (CONNECT, TLS trusting -ca), as the go command does with HTTPS_PROXY.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	base := flag.String("base", "", "URL the paths are relative to")
	pathsFile := flag.String("paths", "", "file with one path per line")
	proxy := flag.String("proxy", "", "HTTPS proxy URL (optional)")
	ca := flag.String("ca", "", "PEM bundle to trust (optional)")
	conns := flag.Int("conns", 4, "concurrent keep-alive connections")
	duration := flag.Duration("duration", 3*time.Second, "stop after this long")
	max := flag.Int64("max", 1000000, "stop after this many requests")
	h2 := flag.Bool("h2", false, "allow HTTP/2 (as the go command does)")
	flag.Parse()

	paths := readLines(*pathsFile)
	transport := &http.Transport{
		MaxIdleConns:        *conns,
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		DisableCompression:  true,
		ForceAttemptHTTP2:   *h2,
		TLSClientConfig:     &tls.Config{RootCAs: roots(*ca)},
	}
	if !*h2 {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	if *proxy != "" {
		u, err := url.Parse(*proxy)
		check(err)
		transport.Proxy = http.ProxyURL(u)
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}

	var next, done, failed, bytes atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := next.Add(1) - 1
				if i >= *max {
					return
				}
				n, err := get(client, *base+paths[int(i)%len(paths)])
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					done.Add(1)
					bytes.Add(n)
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	out := map[string]any{
		"requests": done.Load(), "errors": failed.Load(), "bytes": bytes.Load(),
		"seconds": secs, "rps": float64(done.Load()) / secs,
		"mb_per_s": float64(bytes.Load()) / secs / 1e6, "first_error": firstErr.Load(),
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
}

func get(client *http.Client, u string) (int64, error) {
	resp, err := client.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, err
	}
	if resp.StatusCode != 200 {
		return n, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return n, nil
}

func roots(file string) *x509.CertPool {
	if file == "" {
		return nil
	}
	pem, err := os.ReadFile(file)
	check(err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool
}

func readLines(file string) []string {
	f, err := os.Open(file)
	check(err)
	defer f.Close()
	var lines []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if line := strings.TrimSpace(scanner.Text()); line != "" {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		check(fmt.Errorf("%s: no paths", file))
	}
	return lines
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
}
