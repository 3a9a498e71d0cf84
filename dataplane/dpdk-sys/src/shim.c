#include "shim.h"
#include <rte_mbuf_pool_ops.h>

int vpnfwd_rte_errno(void) { return rte_errno; }

uint16_t vpnfwd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t vpnfwd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

int vpnfwd_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(pool, mbufs, n);
}

struct rte_mbuf *vpnfwd_pktmbuf_alloc(struct rte_mempool *pool) { return rte_pktmbuf_alloc(pool); }

struct rte_mempool *vpnfwd_pktmbuf_pool_create_packed(const char *name, unsigned n,
		unsigned cache, uint16_t data_room, int socket)
{
	struct rte_pktmbuf_pool_private priv = {
		.mbuf_data_room_size = data_room,
		.mbuf_priv_size = 0,
	};
	unsigned elt_size = (unsigned)sizeof(struct rte_mbuf) + data_room;
	struct rte_mempool *mp = rte_mempool_create_empty(name, n, elt_size, cache,
			sizeof(struct rte_pktmbuf_pool_private), socket,
			RTE_MEMPOOL_F_NO_IOVA_CONTIG);
	int err;

	if (mp == NULL)
		return NULL;
	err = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
	if (err != 0)
		goto fail;
	rte_pktmbuf_pool_init(mp, &priv);
	err = rte_mempool_populate_default(mp);
	if (err < 0)
		goto fail;
	rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
	return mp;
fail:
	rte_mempool_free(mp);
	rte_errno = -err;
	return NULL;
}

void vpnfwd_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void *vpnfwd_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

void *vpnfwd_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len)
{
	if ((uint32_t)m->data_off + len > m->buf_len)
		return NULL;
	m->data_len = len;
	m->pkt_len = len;
	return rte_pktmbuf_mtod(m, void *);
}

int vpnfwd_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips, uint32_t *next_hops, unsigned n)
{
	return rte_lpm_lookup_bulk(lpm, ips, next_hops, n);
}

void vpnfwd_lpm_lookupx4(const struct rte_lpm *lpm, const uint32_t *ips, uint32_t *hops, unsigned n, uint32_t miss)
{
	for (unsigned i = 0; i + 4 <= n; i += 4) {
		xmm_t ip = _mm_loadu_si128((const __m128i *)(ips + i));
		rte_lpm_lookupx4(lpm, ip, hops + i, miss);
	}
}
