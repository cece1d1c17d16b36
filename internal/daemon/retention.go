package daemon

import (
	"context"
	"time"
)

// retention drops event partitions older than clickhouse.retention_days,
// at start and then hourly, until ctx ends.
func (d *Daemon) retention(ctx context.Context) error {
	days := d.cfg.ClickHouse.RetentionDays
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		cutoff := time.Now().UTC().AddDate(0, 0, -days)
		dropped, err := d.store.DropPartitionsBefore(ctx, cutoff)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("retention: drop partitions failed", "component", "store", "err", err)
		case len(dropped) > 0:
			d.log.Info("retention: dropped event partitions", "component", "store", "count", len(dropped), "before", cutoff.Format("2006-01-02"))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
