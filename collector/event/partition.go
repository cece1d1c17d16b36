package event

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Partitioned subjects. TENANTGUARD_USAGE rewrites every well-formed usage
// subject tenantguard.usage.<tenant>.<kind> to
// tenantguard.partitioned.<p>.<tenant>.<kind> as it stores the message,
// where p is Partition(tenant, n). Publishers keep publishing to the usage
// subject; only the stored subject changes. A message still stored under
// tenantguard.usage.> is a stray: a subject of the wrong shape, or one
// stored before the stream had the transform.
const (
	PartitionedSubjects = "tenantguard.partitioned.>"
	partitionedPrefix   = "tenantguard.partitioned."
	// PartitionSource is the subject transform's source: the usage
	// subjects of the right shape.
	PartitionSource = usagePrefix + "*.*"
	// MaxPartitions bounds collector.partitions.
	MaxPartitions = 1024
)

// Partition returns the partition of a tenant among n: FNV-1a 32 of the
// tenant id's bytes, modulo n, exactly as nats-server computes the subject
// transform {{partition(n,1)}} over the tenant token. It returns 0 when n < 1.
func Partition(tenantID string, n int) int {
	if n < 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenantID))
	return int(h.Sum32() % uint32(n))
}

// PartitionDestination is the subject transform's destination for n
// partitions.
func PartitionDestination(n int) string {
	return partitionedPrefix + "{{partition(" + strconv.Itoa(n) + ",1)}}.{{wildcard(1)}}.{{wildcard(2)}}"
}

// PartitionSubjects is the filter of partition p's messages.
func PartitionSubjects(p int) string { return partitionedPrefix + strconv.Itoa(p) + ".>" }

// PartitionedSubject is the stored subject of an event of partition p.
func PartitionedSubject(p int, tenant, kind string) string {
	return partitionedPrefix + strconv.Itoa(p) + "." + tenant + "." + kind
}

// OriginalSubject returns the subject a stored message was published to:
// the usage subject rebuilt from a partitioned one, or subject itself when
// it is not partitioned. The error says a partitioned subject is malformed
// or its partition token is not Partition(tenant, n); original is still the
// best rebuild, for the dead letter's Tenantguard-Subject header.
func OriginalSubject(subject string, n int) (original string, err error) {
	rest, ok := strings.CutPrefix(subject, partitionedPrefix)
	if !ok {
		return subject, nil
	}
	ptok, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return subject, fmt.Errorf("partitioned subject %q must be %s<partition>.<tenant_id>.<kind>", subject, partitionedPrefix)
	}
	original = usagePrefix + rest
	tenant, _, err := ParseSubject(original)
	if err != nil {
		return original, err
	}
	p, perr := strconv.Atoi(ptok)
	if want := Partition(tenant, n); perr != nil || p != want || strconv.Itoa(p) != ptok {
		return original, fmt.Errorf("subject %q: partition %q of tenant %q must be %d of %d", subject, ptok, tenant, want, n)
	}
	return original, nil
}
