// Hadoop's own mini clusters on 127.0.0.1 for tfos's tests: a NameNode and a DataNode
// (MiniDFSCluster), and with --yarn a ResourceManager and a NodeManager (MiniYARNCluster).
//
// Run as a single-file program (Java 11+), with the jars scripts/hadoop/fetch.sh copies:
//   java -cp 'JARS/*' scripts/hadoop/MiniClusters.java CONF_DIR BASE_DIR [--yarn]
// It writes core-site.xml, hdfs-site.xml (and yarn-site.xml) into CONF_DIR, for a
// HADOOP_CONF_DIR, prints "READY hdfs://127.0.0.1:PORT", and runs until its standard input
// closes; then it stops every daemon and exits.

import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

public class MiniClusters {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: MiniClusters CONF_DIR BASE_DIR [--yarn]");
            System.exit(2);
        }
        File confDir = new File(args[0]);
        String baseDir = args[1];
        boolean withYarn = args.length > 2 && args[2].equals("--yarn");
        confDir.mkdirs();

        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, baseDir + "/dfs");
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setBoolean("dfs.webhdfs.enabled", false);
        MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf).numDataNodes(1).build();
        dfs.waitActive();
        String uri = "hdfs://127.0.0.1:" + dfs.getNameNodePort();

        Configuration clientConf = new Configuration(false);
        clientConf.set("fs.defaultFS", uri);
        write(clientConf, new File(confDir, "core-site.xml"));
        Configuration hdfsConf = new Configuration(false);
        hdfsConf.set("dfs.replication", "1");
        hdfsConf.set("dfs.client.use.datanode.hostname", "false");
        write(hdfsConf, new File(confDir, "hdfs-site.xml"));

        MiniYARNCluster yarn = null;
        if (withYarn) {
            YarnConfiguration yarnConf = new YarnConfiguration(dfs.getConfiguration(0));
            yarnConf.set("fs.defaultFS", uri);
            yarnConf.set(YarnConfiguration.RM_HOSTNAME, "127.0.0.1");
            yarnConf.set("yarn.nodemanager.hostname", "127.0.0.1");
            yarnConf.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
            yarnConf.setBoolean("yarn.nodemanager.pmem-check-enabled", false);
            // MiniYARNCluster gives its NodeManagers this, not NM_PMEM_MB (default 4096: an
            // application master and two 1 GB executors would not fit)
            yarnConf.setInt(YarnConfiguration.YARN_MINICLUSTER_NM_PMEM_MB, 8192);
            yarnConf.setInt(YarnConfiguration.RM_SCHEDULER_MINIMUM_ALLOCATION_MB, 256);
            // the capacity scheduler's one queue (as Spark's YarnClusterSuite sets it)
            yarnConf.set("yarn.scheduler.capacity.root.queues", "default");
            yarnConf.set("yarn.scheduler.capacity.root.default.capacity", "100");
            yarnConf.set("yarn.scheduler.capacity.root.default.maximum-capacity", "100");
            yarnConf.set("yarn.scheduler.capacity.maximum-am-resource-percent", "0.5");
            yarn = new MiniYARNCluster("tfos", 1, 1, 1);
            yarn.init(yarnConf);
            yarn.start();
            Configuration served = yarn.getConfig();
            Configuration yarnSite = new Configuration(false);
            for (String key : new String[] {
                    YarnConfiguration.RM_ADDRESS, YarnConfiguration.RM_SCHEDULER_ADDRESS,
                    YarnConfiguration.RM_RESOURCE_TRACKER_ADDRESS, YarnConfiguration.RM_ADMIN_ADDRESS,
                    YarnConfiguration.RM_WEBAPP_ADDRESS, YarnConfiguration.RM_HOSTNAME}) {
                String value = served.get(key);
                if (value != null) {
                    yarnSite.set(key, value);
                }
            }
            write(yarnSite, new File(confDir, "yarn-site.xml"));
            System.out.println("YARN " + served.get(YarnConfiguration.RM_ADDRESS));
        }
        System.out.println("READY " + uri);
        System.out.flush();

        try {
            while (System.in.read() != -1) {
                // until the test's fixture closes our standard input
            }
        } finally {
            if (yarn != null) {
                yarn.stop();
            }
            dfs.shutdown(true);
        }
        System.exit(0);
    }

    private static void write(Configuration conf, File file) throws Exception {
        try (OutputStream out = new FileOutputStream(file)) {
            conf.writeXml(out);
        }
    }
}
