// Command loadgen drives an admission webhook with AdmissionReview bodies over
// TLS and keep-alive connections, and prints one JSON report.
//
// Modes:
//
//	closed  N connections, each sends its next request as soon as the last one
//	        is answered: the server's maximum throughput.
//	open    requests start on a fixed schedule (rate per second) whatever the
//	        server does; latency counts from the scheduled start, so a server
//	        that falls behind is charged for the queue (no coordinated omission).
//	verify  every payload once, in order: the verdict (allowed) of each.
//
// Payloads come from DIR/manifest.json, written by bench/payloads.py:
//
//	{"payloads": [{"file": "...", "class": "...", "weight": 12, "uid": "..."}]}
//
// A request counts as an error unless the answer is HTTP 200 and echoes the
// review's uid. Only the standard library is used.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type payloadEntry struct {
	File   string `json:"file"`
	Class  string `json:"class"`
	Weight int    `json:"weight"`
	UID    string `json:"uid"`
}

type manifest struct {
	Payloads []payloadEntry `json:"payloads"`
}

type payload struct {
	entry  payloadEntry
	body   []byte
	needle []byte // `"<uid>"`: every answer must echo it
}

type config struct {
	url      string
	caFile   string
	dir      string
	classes  string
	mode     string
	conns    int
	duration time.Duration
	warmup   time.Duration
	rate     float64
	requests int64
	timeout  time.Duration
	out      string
	seed     int64
}

type report struct {
	Mode         string         `json:"mode"`
	URL          string         `json:"url"`
	Classes      []string       `json:"classes"`
	Conns        int            `json:"conns"`
	DurationS    float64        `json:"duration_s"`
	WarmupS      float64        `json:"warmup_s"`
	OfferedRPS   float64        `json:"offered_rps,omitempty"`
	Requests     int64          `json:"requests"`
	Errors       int64          `json:"errors"`
	Dropped      int64          `json:"dropped"`
	RPS          float64        `json:"rps"`
	P50MS        float64        `json:"p50_ms"`
	P90MS        float64        `json:"p90_ms"`
	P99MS        float64        `json:"p99_ms"`
	MaxMS        float64        `json:"max_ms"`
	MeanMS       float64        `json:"mean_ms"`
	BytesSent    int64          `json:"bytes_sent"`
	ErrorSamples []string       `json:"error_samples"`
	Verdicts     []verdictEntry `json:"verdicts,omitempty"`
}

type verdictEntry struct {
	File     string `json:"file"`
	Class    string `json:"class"`
	Status   int    `json:"status"`
	UIDEcho  bool   `json:"uid_echoed"`
	Allowed  *bool  `json:"allowed"`
	Message  string `json:"message,omitempty"`
	Warnings int    `json:"warnings"`
	Error    string `json:"error,omitempty"`
}

// recorder keeps one worker's latencies; merged once at the end.
type recorder struct {
	latencies []time.Duration
	errors    int64
	bytes     int64
	samples   []string
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.url, "url", "", "https URL of the webhook endpoint")
	flag.StringVar(&cfg.caFile, "ca", "", "PEM CA bundle that signed the server certificate")
	flag.StringVar(&cfg.dir, "payloads", "", "directory holding manifest.json and the bodies")
	flag.StringVar(&cfg.classes, "class", "", "comma-separated payload classes to use (default: all)")
	flag.StringVar(&cfg.mode, "mode", "closed", "closed, open or verify")
	flag.IntVar(&cfg.conns, "conns", 16, "connections (closed) or the connection pool (open)")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time, after the warm-up")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load sent before measuring, not recorded")
	flag.Float64Var(&cfg.rate, "rate", 100, "requests per second (open)")
	flag.Int64Var(&cfg.requests, "requests", 0, "closed: stop after this many requests in all (0: no limit)")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "per-request timeout (the API server's default)")
	flag.StringVar(&cfg.out, "out", "", "write the JSON report here instead of stdout")
	flag.Int64Var(&cfg.seed, "seed", 1, "seed of the payload order")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
}

func run(cfg config) error {
	if cfg.url == "" || cfg.caFile == "" || cfg.dir == "" {
		return fmt.Errorf("-url, -ca and -payloads are required")
	}
	payloads, classes, err := loadPayloads(cfg.dir, cfg.classes)
	if err != nil {
		return err
	}
	client, err := newClient(cfg)
	if err != nil {
		return err
	}
	var rep report
	switch cfg.mode {
	case "verify":
		rep = verify(cfg, client, payloads)
	case "closed":
		rep = closedLoop(cfg, client, payloads, schedule(payloads, cfg.seed))
	case "open":
		if cfg.rate <= 0 {
			return fmt.Errorf("-rate must be positive")
		}
		rep = openLoop(cfg, client, payloads, schedule(payloads, cfg.seed))
	default:
		return fmt.Errorf("unknown -mode %q", cfg.mode)
	}
	rep.Mode, rep.URL, rep.Classes, rep.Conns = cfg.mode, cfg.url, classes, cfg.conns
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if cfg.out == "" {
		_, err = os.Stdout.Write(append(data, '\n'))
		return err
	}
	return os.WriteFile(cfg.out, append(data, '\n'), 0o644)
}

func loadPayloads(dir, classFilter string) ([]payload, []string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, nil, err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("manifest.json: %w", err)
	}
	wanted := map[string]bool{}
	for _, c := range strings.Split(classFilter, ",") {
		if c = strings.TrimSpace(c); c != "" {
			wanted[c] = true
		}
	}
	var out []payload
	seen := map[string]bool{}
	var classes []string
	for _, e := range m.Payloads {
		if len(wanted) > 0 && !wanted[e.Class] {
			continue
		}
		body, err := os.ReadFile(filepath.Join(dir, e.File))
		if err != nil {
			return nil, nil, err
		}
		if e.UID == "" {
			return nil, nil, fmt.Errorf("%s: no uid in the manifest", e.File)
		}
		out = append(out, payload{entry: e, body: body, needle: []byte(`"` + e.UID + `"`)})
		if !seen[e.Class] {
			seen[e.Class] = true
			classes = append(classes, e.Class)
		}
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("no payloads in %s match -class %q", dir, classFilter)
	}
	return out, classes, nil
}

// schedule expands the weights into a fixed, shuffled order that all workers walk.
func schedule(payloads []payload, seed int64) []int {
	var order []int
	for i, p := range payloads {
		w := p.entry.Weight
		if w < 1 {
			w = 1
		}
		for j := 0; j < w; j++ {
			order = append(order, i)
		}
	}
	rand.New(rand.NewSource(seed)).Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
	return order
}

func newClient(cfg config) (*http.Client, error) {
	pem, err := os.ReadFile(cfg.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", cfg.caFile)
	}
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        cfg.conns,
		MaxIdleConnsPerHost: cfg.conns,
		MaxConnsPerHost:     cfg.conns,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		// HTTP/1.1 for every server: uvicorn speaks nothing else, so OPA gets no h2 edge.
		ForceAttemptHTTP2: false,
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &http.Client{Transport: transport, Timeout: cfg.timeout}, nil
}

// send posts one body; returns the answer body, the status and an error text ("" when fine).
func send(client *http.Client, url string, p *payload) ([]byte, int, string) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(p.body))
	if err != nil {
		return nil, 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err.Error()
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, resp.StatusCode, err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return body, resp.StatusCode, fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, body)
	}
	if !bytes.Contains(body, p.needle) {
		return body, resp.StatusCode, fmt.Sprintf("uid %s not echoed: %.200s", p.entry.UID, body)
	}
	return body, resp.StatusCode, ""
}

func (r *recorder) fail(text string) {
	r.errors++
	if len(r.samples) < 5 {
		r.samples = append(r.samples, text)
	}
}

func closedLoop(cfg config, client *http.Client, payloads []payload, order []int) report {
	start := time.Now()
	measureFrom := start.Add(cfg.warmup)
	end := measureFrom.Add(cfg.duration)
	var next int64 = -1
	recorders := make([]*recorder, cfg.conns)
	var wg sync.WaitGroup
	for w := 0; w < cfg.conns; w++ {
		rec := &recorder{}
		recorders[w] = rec
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := atomic.AddInt64(&next, 1)
				if cfg.requests > 0 && n >= cfg.requests {
					return
				}
				began := time.Now()
				if began.After(end) {
					return
				}
				p := &payloads[order[n%int64(len(order))]]
				_, _, failure := send(client, cfg.url, p)
				done := time.Now()
				if began.Before(measureFrom) {
					continue
				}
				if failure != "" {
					rec.fail(failure)
					continue
				}
				rec.latencies = append(rec.latencies, done.Sub(began))
				rec.bytes += int64(len(p.body))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	if cfg.requests == 0 || elapsed > cfg.duration {
		elapsed = minDuration(elapsed, cfg.duration)
	}
	rep := summarize(recorders, elapsed)
	rep.WarmupS = cfg.warmup.Seconds()
	return rep
}

func openLoop(cfg config, client *http.Client, payloads []payload, order []int) report {
	type job struct {
		due time.Time
		p   *payload
	}
	interval := time.Duration(float64(time.Second) / cfg.rate)
	total := int64(math.Ceil((cfg.warmup + cfg.duration).Seconds() * cfg.rate))
	jobs := make(chan job, total+1)
	start := time.Now().Add(50 * time.Millisecond)
	measureFrom := start.Add(cfg.warmup)
	recorders := make([]*recorder, cfg.conns)
	var wg sync.WaitGroup
	var inFlightCancelled int64
	drainBy := start.Add(cfg.warmup + cfg.duration + 5*time.Second)
	for w := 0; w < cfg.conns; w++ {
		rec := &recorder{}
		recorders[w] = rec
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if time.Now().After(drainBy) {
					atomic.AddInt64(&inFlightCancelled, 1) // the server fell too far behind
					continue
				}
				_, _, failure := send(client, cfg.url, j.p)
				done := time.Now()
				if j.due.Before(measureFrom) {
					continue
				}
				if failure != "" {
					rec.fail(failure)
					continue
				}
				rec.latencies = append(rec.latencies, done.Sub(j.due))
				rec.bytes += int64(len(j.p.body))
			}
		}()
	}
	for i := int64(0); i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		jobs <- job{due: due, p: &payloads[order[i%int64(len(order))]]}
	}
	close(jobs)
	wg.Wait()
	rep := summarize(recorders, cfg.duration)
	rep.OfferedRPS = cfg.rate
	rep.WarmupS = cfg.warmup.Seconds()
	rep.Dropped = inFlightCancelled
	return rep
}

func verify(cfg config, client *http.Client, payloads []payload) report {
	rep := report{ErrorSamples: []string{}}
	for i := range payloads {
		p := &payloads[i]
		body, status, failure := send(client, cfg.url, p)
		entry := verdictEntry{File: p.entry.File, Class: p.entry.Class, Status: status, Error: failure}
		entry.UIDEcho = failure == "" || !strings.Contains(failure, "not echoed")
		var answer struct {
			Response struct {
				Allowed  *bool    `json:"allowed"`
				Warnings []string `json:"warnings"`
				Status   struct {
					Message string `json:"message"`
				} `json:"status"`
			} `json:"response"`
		}
		if failure == "" {
			if err := json.Unmarshal(body, &answer); err != nil {
				entry.Error = "answer is not JSON: " + err.Error()
			} else {
				entry.Allowed = answer.Response.Allowed
				entry.Message = answer.Response.Status.Message
				entry.Warnings = len(answer.Response.Warnings)
				if entry.Allowed == nil {
					entry.Error = "answer has no response.allowed"
				}
			}
		}
		if entry.Error != "" {
			rep.Errors++
			if len(rep.ErrorSamples) < 5 {
				rep.ErrorSamples = append(rep.ErrorSamples, p.entry.File+": "+entry.Error)
			}
		}
		rep.Requests++
		rep.Verdicts = append(rep.Verdicts, entry)
	}
	return rep
}

func summarize(recorders []*recorder, window time.Duration) report {
	var all []time.Duration
	rep := report{ErrorSamples: []string{}, DurationS: window.Seconds()}
	var sum time.Duration
	for _, r := range recorders {
		all = append(all, r.latencies...)
		rep.Errors += r.errors
		rep.BytesSent += r.bytes
		for _, s := range r.samples {
			if len(rep.ErrorSamples) < 5 {
				rep.ErrorSamples = append(rep.ErrorSamples, s)
			}
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	for _, d := range all {
		sum += d
	}
	rep.Requests = int64(len(all)) + rep.Errors
	if window > 0 {
		rep.RPS = round3(float64(len(all)) / window.Seconds())
	}
	if len(all) > 0 {
		rep.P50MS = ms(percentile(all, 0.50))
		rep.P90MS = ms(percentile(all, 0.90))
		rep.P99MS = ms(percentile(all, 0.99))
		rep.MaxMS = ms(all[len(all)-1])
		rep.MeanMS = ms(sum / time.Duration(len(all)))
	}
	return rep
}

// percentile by the nearest-rank method on sorted values.
func percentile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return sorted[rank]
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
