/* The DPDK API vpnfwd uses: the headers bindgen reads, and the shim's
 * out-of-line copies of DPDK's static inline functions. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_malloc.h>

/* The calling thread's rte_errno. */
int vpnfwd_rte_errno(void);

uint16_t vpnfwd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t vpnfwd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

/* Allocate n mbufs (all or none); 0 on success. */
int vpnfwd_pktmbuf_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned n);
struct rte_mbuf *vpnfwd_pktmbuf_alloc(struct rte_mempool *pool);
/* A packet-buffer pool whose objects lie back to back, with no gaps at
 * page boundaries (RTE_MEMPOOL_F_NO_IOVA_CONTIG): for devices that do no
 * DMA. net_af_xdp registers [first object, first + n objects) as its UMEM,
 * so with the default layout the last objects of a pool spread over several
 * huge pages fall outside it and frames sent from them are dropped. NULL
 * with rte_errno set on failure. */
struct rte_mempool *vpnfwd_pktmbuf_pool_create_packed(const char *name, unsigned n,
		unsigned cache, uint16_t data_room, int socket);
void vpnfwd_pktmbuf_free(struct rte_mbuf *m);
/* Start of the packet data, and its length in the first segment. */
void *vpnfwd_pktmbuf_mtod(struct rte_mbuf *m);
/* Set a single-segment mbuf's data length; NULL if it does not fit. */
void *vpnfwd_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len);

int vpnfwd_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips, uint32_t *next_hops, unsigned n);
/* Looks up n addresses four at a time with rte_lpm_lookupx4 (n a multiple of 4);
 * misses get `miss`. */
void vpnfwd_lpm_lookupx4(const struct rte_lpm *lpm, const uint32_t *ips, uint32_t *hops, unsigned n, uint32_t miss);
