/*
 * dp_port.c: DPDK ports. Each configured port is an ethdev that EAL probed
 * from --vdev / -a arguments; here it gets one rx and one tx queue per worker
 * lcore, its MTU and MAC, a tx buffer per worker, and is started.
 *
 * Queue i of every port belongs to worker i, so no queue is ever shared and
 * no lock is needed on the packet path.
 */
#include <errno.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>

#include "dp_internal.h"

static int
dp_port_setup_one(uint16_t idx, const struct dp_port_conf *pc, unsigned nb_queues, char *err, size_t errlen)
{
	struct dp_port *p = &dp.ports[idx];
	struct rte_eth_dev_info info;
	struct rte_eth_conf ec;
	uint16_t pid, nb_rxd = pc->rx_desc, nb_txd = pc->tx_desc;
	int ret;

	ret = rte_eth_dev_get_port_by_name(pc->devname, &pid);
	if (ret < 0) {
		/* An af_packet probe failing on PACKET_FANOUT is the one cause an operator cannot
		 * guess from the EAL log: DPDK 22.11 names the fanout group (pid ^ ifindex) & 0xffff
		 * per network namespace, so another af_packet process can hold the same id. */
		dp_set_err(err, errlen, "port %s: device %s was not probed by EAL (see its log%s)", pc->name,
			pc->devname,
			strncmp(pc->devname, "net_af_packet", 13) == 0
				? "; PACKET_FANOUT EINVAL: another af_packet process in this netns "
				  "has group id pid^ifindex, start again"
				: "");
		return -ENODEV;
	}
	p->port_id = pid;
	p->conf = *pc;

	ret = rte_eth_dev_info_get(pid, &info);
	if (ret < 0) {
		dp_set_err(err, errlen, "port %s: cannot read device info: %s", pc->name, rte_strerror(-ret));
		return ret;
	}
	if (nb_queues > info.max_rx_queues || nb_queues > info.max_tx_queues) {
		dp_set_err(err, errlen,
			"port %s: %s supports %u rx / %u tx queues, %u workers need one each%s", pc->name,
			info.driver_name, info.max_rx_queues, info.max_tx_queues, nb_queues,
			strstr(info.driver_name, "af_packet") ? " (add qpairs=N to the device string)" : "");
		return -EINVAL;
	}

	memset(&ec, 0, sizeof(ec));
	ec.rxmode.mtu = pc->mtu;
	if (nb_queues > 1) {
		/* Spread flows over the workers' queues. Keeping both directions of
		 * an FNAT conn on one worker is the conn table's job (see docs). */
		ec.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		ec.rx_adv_conf.rss_conf.rss_hf =
			(RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
		if (ec.rx_adv_conf.rss_conf.rss_hf == 0)
			ec.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
	}
	ret = rte_eth_dev_configure(pid, nb_queues, nb_queues, &ec);
	if (ret < 0) {
		dp_set_err(err, errlen, "port %s: configure failed (mtu %u): %s", pc->name, pc->mtu,
			rte_strerror(-ret));
		return ret;
	}
	ret = rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nb_rxd, &nb_txd);
	if (ret < 0) {
		dp_set_err(
			err, errlen, "port %s: descriptor counts rejected: %s", pc->name, rte_strerror(-ret));
		return ret;
	}
	int socket = rte_eth_dev_socket_id(pid);
	if (socket < 0)
		socket = (int)rte_socket_id();
	for (uint16_t q = 0; q < nb_queues; q++) {
		ret = rte_eth_rx_queue_setup(pid, q, nb_rxd, (unsigned)socket, NULL, dp.pool);
		if (ret < 0) {
			dp_set_err(err, errlen, "port %s: rx queue %u setup failed: %s", pc->name, q,
				rte_strerror(-ret));
			return ret;
		}
		ret = rte_eth_tx_queue_setup(pid, q, nb_txd, (unsigned)socket, NULL);
		if (ret < 0) {
			dp_set_err(err, errlen, "port %s: tx queue %u setup failed: %s", pc->name, q,
				rte_strerror(-ret));
			return ret;
		}
	}
	if (pc->has_mac) {
		struct rte_ether_addr a;

		memcpy(a.addr_bytes, pc->mac, RTE_ETHER_ADDR_LEN);
		ret = rte_eth_dev_default_mac_addr_set(pid, &a);
		if (ret == -ENOTSUP) {
			/* The driver cannot program a MAC (net_ring, net_pcap): own the
			 * address in software; promiscuous mode makes the device hand
			 * us frames for it, and dp_l2 filters on it. */
			p->mac = a;
			p->soft_mac = true;
			ret = 0;
		}
		if (ret < 0) {
			dp_set_err(err, errlen, "port %s: cannot set MAC: %s", pc->name, rte_strerror(-ret));
			return ret;
		}
	}
	ret = p->soft_mac ? 0 : rte_eth_macaddr_get(pid, &p->mac);
	if (ret < 0) {
		dp_set_err(err, errlen, "port %s: cannot read MAC: %s", pc->name, rte_strerror(-ret));
		return ret;
	}

	/* Per-worker tx buffers; frames the driver refuses are freed and counted
	 * by DPDK's count callback straight into the worker's drop counter. */
	for (unsigned w = 0; w < dp.nb_workers; w++) {
		struct dp_worker *wk = dp.workers[w];
		struct rte_eth_dev_tx_buffer *b = rte_zmalloc_socket("retrace_txb",
			RTE_ETH_TX_BUFFER_SIZE(dp.conf.burst), 0, rte_lcore_to_socket_id(wk->lcore_id));
		if (b == NULL) {
			dp_set_err(err, errlen, "port %s: cannot allocate tx buffer", pc->name);
			return -ENOMEM;
		}
		rte_eth_tx_buffer_init(b, dp.conf.burst);
		rte_eth_tx_buffer_set_err_callback(
			b, rte_eth_tx_buffer_count_callback, &wk->ctr->drop[idx][DP_DROP_tx_full]);
		wk->txb[idx] = b;
	}

	ret = rte_eth_dev_start(pid);
	if (ret < 0) {
		dp_set_err(err, errlen, "port %s: start failed: %s", pc->name, rte_strerror(-ret));
		return ret;
	}
	p->started = true;
	if (pc->promiscuous || p->soft_mac) {
		ret = rte_eth_promiscuous_enable(pid);
		if (ret < 0 && ret != -ENOTSUP) {
			dp_set_err(err, errlen, "port %s: cannot enable promiscuous mode: %s", pc->name,
				rte_strerror(-ret));
			return ret;
		}
	}
	return dp_kni_setup(idx, err, errlen);
}

int
dp_ports_setup(const struct dp_conf *conf, unsigned nb_queues, char *err, size_t errlen)
{
	memset(dp.ports, 0, sizeof(dp.ports));
	dp.nb_ports = 0;
	dp.nb_kni = 0;
	for (uint16_t i = 0; i < conf->nb_ports; i++) {
		for (uint16_t j = 0; j < i; j++) {
			if (strcmp(conf->ports[i].devname, conf->ports[j].devname) == 0) {
				dp_set_err(err, errlen, "ports %s and %s use the same device %s",
					conf->ports[j].name, conf->ports[i].name, conf->ports[i].devname);
				dp_ports_teardown();
				return -EINVAL;
			}
		}
		dp.nb_ports = i + 1;
		int ret = dp_port_setup_one(i, &conf->ports[i], nb_queues, err, errlen);
		if (ret < 0) {
			dp_ports_teardown();
			return ret;
		}
	}
	dp.min_mtu = UINT16_MAX;
	for (uint16_t i = 0; i < dp.nb_ports; i++)
		dp.min_mtu = RTE_MIN(dp.min_mtu, dp.ports[i].conf.mtu);
	return 0;
}

void
dp_ports_teardown(void)
{
	for (uint16_t i = 0; i < dp.nb_ports; i++) {
		struct dp_port *p = &dp.ports[i];

		dp_kni_teardown(i);
		if (p->started) {
			rte_eth_dev_stop(p->port_id);
			p->started = false;
		}
		/* Closing releases the queues (and the mbufs they hold) before the
		 * pool is freed, and the kernel sockets of af_packet ports. */
		rte_eth_dev_close(p->port_id);
	}
	dp.nb_ports = 0;
}

uint16_t
dp_nb_ports(void)
{
	return dp.nb_ports;
}

int
dp_port_info(uint16_t idx, struct dp_port_info *info)
{
	struct rte_eth_dev_info di;
	struct rte_eth_stats st;
	struct rte_eth_link link;
	const struct dp_port *p;
	uint16_t mtu = 0;
	int ret;

	if (dp_get_state() != DP_STATE_RUNNING)
		return -EBUSY;
	if (idx >= dp.nb_ports)
		return -ENOENT;
	p = &dp.ports[idx];
	memset(info, 0, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%s", p->conf.name);
	snprintf(info->devname, sizeof(info->devname), "%s", p->conf.devname);
	info->port_id = p->port_id;
	memcpy(info->mac, p->mac.addr_bytes, 6);
	if (rte_eth_dev_info_get(p->port_id, &di) == 0) {
		snprintf(info->driver, sizeof(info->driver), "%s", di.driver_name);
		info->rx_queues = di.nb_rx_queues;
		info->tx_queues = di.nb_tx_queues;
	}
	if (rte_eth_dev_get_mtu(p->port_id, &mtu) == 0)
		info->mtu = mtu;
	if (rte_eth_link_get_nowait(p->port_id, &link) == 0) {
		info->link = link.link_status == RTE_ETH_LINK_UP ? DP_LINK_UP : DP_LINK_DOWN;
		info->speed_mbps = link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN ? 0 : link.link_speed;
	}
	ret = rte_eth_stats_get(p->port_id, &st);
	if (ret < 0)
		return ret;
	info->rx_packets = st.ipackets;
	info->rx_bytes = st.ibytes;
	info->tx_packets = st.opackets;
	info->tx_bytes = st.obytes;
	info->rx_errors = st.ierrors;
	info->tx_errors = st.oerrors;
	info->rx_missed = st.imissed;
	info->rx_nombuf = st.rx_nombuf;
	info->has_kni = p->kni;
	for (unsigned b = 0; b <= dp.nb_workers; b++) {
		info->tx_dropped += dp.blocks[b].drop[idx][DP_DROP_tx_full];
		info->to_kernel += dp.blocks[b].to_kernel[idx];
		info->from_kernel += dp.blocks[b].from_kernel[idx];
		info->kernel_dropped += dp.blocks[b].drop[idx][DP_DROP_kernel_dropped];
	}
	return 0;
}
