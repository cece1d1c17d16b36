// Package backfill imports usage history: `tenantguard import`.
//
// It takes in NDJSON (one wire format v1 event per line, as `tenantguard
// export events` writes it) or CSV (a header row of wire field names, as
// the events export's CSV has), and puts out rows in the events table, with
// their original times, so usage_1m fills through its view as for live
// events. Every line goes through what the collector does to a message:
// the same validation (event.Validator, including the lateness window
// unless AllowOlder), the same pricing (the price book of today), and the
// same dedup (store.ExistingIDs on the sorting key, plus repeats within a
// batch), so importing the same input twice stores it once.
//
// A rejected line is counted with its line number and reason and stores
// nothing; the lines around it are imported. Parsing runs in one goroutine
// and the dedup lookup and insert of each batch in another. The importer
// writes to ClickHouse directly, never through the live stream: imported
// history raises no alerts or throttles and moves no live Prometheus
// counter; the detector sees it at its next warm start, as history.
package backfill
