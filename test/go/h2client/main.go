// h2client is a real Go HTTP client for portcullis' tests: it goes through the proxy with
// CONNECT, trusts portcullis' CA, lets net/http negotiate h2 over ALPN, and prints one JSON
// line per request it made. Standard library only, so `go build main.go` needs no network.
//
//	h2client -proxy http://127.0.0.1:8080 -ca certs/ca.pem -url https://host/path [-upload N]
//
// It always does a GET of -url; with -upload N > 0 it then POSTs N pseudo-random bytes to the
// same URL as a stream of unknown length (no Content-Length), over the same connection pool,
// with a request trailer X-Sent-Sha256 holding the hash of what was sent.
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"os"
	"time"
)

type result struct {
	Method     string              `json:"method"`
	Proto      string              `json:"proto"`
	Status     int                 `json:"status"`
	Header     map[string][]string `json:"header"`
	BodyBytes  int64               `json:"body_bytes"`
	BodySHA256 string              `json:"body_sha256"`
	// Body is the response body as text, cut at 64 KiB (the full body is in body_sha256).
	Body    string              `json:"body"`
	Trailer map[string][]string `json:"trailer"`
	// SentBytes and SentSHA256 describe the request body the client streamed (POST only).
	SentBytes  int64  `json:"sent_bytes,omitempty"`
	SentSHA256 string `json:"sent_sha256,omitempty"`
	// ContentLength is the request's ContentLength as net/http saw it: -1 means unknown.
	ContentLength int64 `json:"request_content_length"`
}

// streamBody yields n pseudo-random bytes in small writes and hashes what it gave out.
// It is not a *bytes.Reader, *bytes.Buffer or *strings.Reader, so net/http cannot learn
// its length and sends no Content-Length.
type streamBody struct {
	left    int64
	sent    int64
	rng     *rand.Rand
	sum     hash.Hash
	trailer http.Header // the request's Trailer, filled in at EOF (net/http sends it after the body)
}

func (s *streamBody) Read(p []byte) (int, error) {
	if s.left <= 0 {
		if s.trailer != nil {
			s.trailer.Set("X-Sent-Sha256", hex.EncodeToString(s.sum.Sum(nil)))
		}
		return 0, io.EOF
	}
	if len(p) > 16*1024 {
		p = p[:16*1024]
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	s.rng.Read(p)
	s.sum.Write(p)
	s.left -= int64(len(p))
	s.sent += int64(len(p))
	return len(p), nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "h2client: "+format+"\n", args...)
	os.Exit(1)
}

func do(client *http.Client, req *http.Request, body *streamBody) result {
	resp, err := client.Do(req)
	if err != nil {
		fail("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	sum := sha256.New()
	var text []byte
	n, err := io.Copy(io.MultiWriter(sum, writerFunc(func(p []byte) (int, error) {
		if room := 64*1024 - len(text); room > 0 {
			if len(p) < room {
				room = len(p)
			}
			text = append(text, p[:room]...)
		}
		return len(p), nil
	})), resp.Body)
	if err != nil {
		fail("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	// resp.Trailer is complete only now that the body has been read to EOF.
	trailer := map[string][]string{}
	for name, values := range resp.Trailer {
		trailer[name] = values
	}
	out := result{
		Method:        req.Method,
		Proto:         resp.Proto,
		Status:        resp.StatusCode,
		Header:        resp.Header,
		BodyBytes:     n,
		BodySHA256:    hex.EncodeToString(sum.Sum(nil)),
		Body:          string(text),
		Trailer:       trailer,
		ContentLength: req.ContentLength,
	}
	if body != nil {
		out.SentBytes = body.sent
		out.SentSHA256 = hex.EncodeToString(body.sum.Sum(nil))
	}
	return out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func main() {
	proxyFlag := flag.String("proxy", "", "proxy URL, e.g. http://127.0.0.1:8080")
	caFlag := flag.String("ca", "", "PEM file of the CA to trust (portcullis' CA)")
	urlFlag := flag.String("url", "", "target URL (https://...)")
	upload := flag.Int64("upload", 0, "after the GET, POST this many bytes with no Content-Length")
	timeout := flag.Duration("timeout", 30*time.Second, "overall timeout per request")
	flag.Parse()
	if *proxyFlag == "" || *caFlag == "" || *urlFlag == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}

	proxyURL, err := url.Parse(*proxyFlag)
	if err != nil {
		fail("bad -proxy: %v", err)
	}
	pem, err := os.ReadFile(*caFlag)
	if err != nil {
		fail("reading -ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", *caFlag)
	}
	transport := &http.Transport{
		Proxy:             http.ProxyURL(proxyURL),
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: *timeout}
	encoder := json.NewEncoder(os.Stdout)

	get, err := http.NewRequest(http.MethodGet, *urlFlag, nil)
	if err != nil {
		fail("bad -url: %v", err)
	}
	if err := encoder.Encode(do(client, get, nil)); err != nil {
		fail("writing JSON: %v", err)
	}

	if *upload > 0 {
		body := &streamBody{left: *upload, rng: rand.New(rand.NewSource(time.Now().UnixNano())), sum: sha256.New()}
		post, err := http.NewRequest(http.MethodPost, *urlFlag, body)
		if err != nil {
			fail("bad -url: %v", err)
		}
		post.ContentLength = -1 // unknown: no Content-Length header, the body streams
		post.Trailer = http.Header{"X-Sent-Sha256": nil}
		body.trailer = post.Trailer
		post.Header.Set("Content-Type", "application/octet-stream")
		if err := encoder.Encode(do(client, post, body)); err != nil {
			fail("writing JSON: %v", err)
		}
	}
}
